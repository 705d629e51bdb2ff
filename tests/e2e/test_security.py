"""A hostile client cannot redirect a provider's key, and no provider's error text reaches
a client, a log, the admin API or /metrics with a secret or an internal address in it.

Providers here are scripted fakes (real aiohttp servers, tests/fakes/scripted.py) that
record what they were sent and quote every header they saw in their error messages.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from proxy.settings.config import Config
from proxy.upstream.params import OPENAI_PARAMS
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, policy_file, running_proxy
from tests.fakes.scripted import ScriptedProvider, closed_port, scripted_provider

MESSAGES = [{"role": "user", "content": "hi"}]
PROVIDER_KEY = "sk-provider-secret-0123456789abcdef"
PLAIN_KEY = "plainsecretvalue42xyz"  # a key with no recognisable shape
HEADER_SECRET = "orgsecret-9876543210"
LITELLM_KEY = "lite-secret-key-5555aaaa"


def _config(
    providers: dict[str, dict[str, Any]], models: dict[str, dict[str, str]],
    policy: Path | None = None,
) -> Config:  # fmt: skip
    return Config.model_validate({
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "providers": providers,
        "models": {m: {"providers": p} for m, p in models.items()},
        "buffer": {"flush_interval_s": 0.02},
        "scoreboard": {"refresh_s": 0.05},
        "prober": {"enabled": False},  # exact request counts
        "policies": [str(policy)] if policy else [],
    })  # fmt: skip


# Every litellm argument that chooses where or how it connects, with a hostile value.
def _hostile(thief: str) -> dict[str, Any]:
    return {
        "api_base": thief, "base_url": thief, "api_key": "client-chosen-key",
        "extra_headers": {"X-Injected": "yes"}, "headers": {"X-Injected": "yes"},
        "custom_llm_provider": "azure", "api_version": "2099-01-01",
        "organization": "evil-org", "deployment_id": "evil",
        "aws_access_key_id": "AKIAEVILEVILEVILEVIL", "aws_secret_access_key": "evil",
        "aws_region_name": "evil-1", "aws_bedrock_runtime_endpoint": thief,
        "vertex_project": "evil", "vertex_location": "evil", "vertex_credentials": "{}",
        "azure_ad_token": "evil", "mock_response": "mocked, never sent upstream",
        "metadata": {"evil": True}, "timeout": 0.0001, "num_retries": 5,
        "model_list": [{"model_name": "x", "litellm_params": {"api_base": thief}}],
        "litellm_logging_obj": "evil", "input_cost_per_token": 1000,
    }  # fmt: skip


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("field", sorted(_hostile("http://x")))
async def test_no_litellm_routing_or_credential_argument_comes_from_a_client(
    field: str, litellm_pair: tuple[ScriptedProvider, ScriptedProvider, Any]
) -> None:
    real, thief, proxy = litellm_pair
    before = len(real.requests)
    value = _hostile(thief.base_url)[field]
    if field not in OPENAI_PARAMS["/chat/completions"]:  # not even taken from the body
        with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
            await proxy.client().chat.completions.create(
                model="lite", messages=MESSAGES, stream=True, extra_body={field: value}
            )
        assert thief.requests == [] and len(real.requests) == before
        return
    reply = await proxy.client().chat.completions.create(
        model="lite", messages=MESSAGES, stream=True, extra_body={field: value}
    )
    text = "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
    assert text == "hello world"  # served by the configured provider, not mocked
    assert thief.requests == []
    assert len(real.requests) == before + 1
    seen = real.requests[-1]
    assert seen.headers["Authorization"] == f"Bearer {LITELLM_KEY}"
    assert "X-Injected" not in seen.headers
    assert field not in seen.body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def litellm_pair() -> Any:
    async with scripted_provider() as real, scripted_provider() as thief:
        lite = {"kind": "litellm", "litellm_provider": "openai", "api_base": real.base_url,
                "api_key": LITELLM_KEY}  # fmt: skip
        config = _config({"lite-p": lite}, {"lite": {"lite-p": "gpt-x"}})
        async with running_proxy(config) as proxy:
            yield real, thief, proxy


async def test_openai_provider_headers_never_come_from_the_client() -> None:
    async with scripted_provider() as real:
        providers = {"p": {"kind": "openai", "base_url": real.base_url, "api_key": PROVIDER_KEY}}
        async with running_proxy(_config(providers, {"m": {"p": "up-m"}})) as proxy:
            await proxy.client().chat.completions.create(
                model="m", messages=MESSAGES,
                extra_headers={"X-Injected": "yes", "OpenAI-Organization": "evil"},
            )  # fmt: skip
            with pytest.raises(openai.BadRequestError, match="extra_headers"):
                await proxy.client().chat.completions.create(
                    model="m", messages=MESSAGES, extra_body={"extra_headers": {"X": "y"}}
                )
    assert len(real.requests) == 1
    seen = real.requests[-1]
    assert seen.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "X-Injected" not in seen.headers and "OpenAI-Organization" not in seen.headers


async def test_no_secret_or_internal_address_leaves_through_any_error_path(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    # every error path, every time: a trial per request while every circuit is open
    policy = policy_file(tmp_path, "defaults:\n  circuit: {trial_interval_s: 0}\n")
    dead = closed_port()
    async with scripted_provider() as leaky, scripted_provider() as lite_up:
        providers = {
            "leaky": {"kind": "openai", "base_url": leaky.base_url, "api_key": PROVIDER_KEY,
                      "headers": {"X-Org-Secret": HEADER_SECRET}, "responses": True},
            "plain": {"kind": "openai", "base_url": leaky.base_url, "api_key": PLAIN_KEY,
                      "responses": True},
            "dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{dead}/v1",
                     "api_key": PLAIN_KEY, "responses": True},
            "lite": {"kind": "litellm", "litellm_provider": "openai",
                     "api_base": lite_up.base_url, "api_key": LITELLM_KEY},
        }  # fmt: skip
        models = {"m-leaky": {"leaky": "u"}, "m-plain": {"plain": "u"}, "m-dead": {"dead": "u"},
                  "m-lite": {"lite": "u"},
                  "m-all": {"dead": "u", "plain": "u", "leaky": "u"}}  # fmt: skip
        seen: list[str] = []
        responses: list[str] = []  # through /v1/responses
        async with running_proxy(_config(providers, models, policy)) as proxy:
            client = proxy.client()
            for mode in ("500", "401", "400", "error-before", "error-after"):
                leaky.mode = lite_up.mode = mode
                for model in models:
                    for stream in (True, False):
                        seen.append(await _outcome(client, model, stream))
                        if model != "m-lite":  # litellm providers do not serve /responses
                            responses.append(await _responses_outcome(client, model, stream))
            async with proxy.admin() as admin:
                paths = ("/admin/decisions?limit=1000", "/admin/scores", "/admin/status",
                         "/admin/explain?model=m-all", "/admin/policy", "/metrics")  # fmt: skip
                for path in paths:
                    seen.append((await admin.get(path)).text)
        assert leaky.requests and lite_up.requests
    assert "Incorrect API key provided" in "\n".join(responses)  # errors did come through
    assert "hello" in "\n".join(responses)  # and answers
    everything = "\n".join(seen + responses) + "\n" + caplog.text
    assert "Incorrect API key provided" in everything  # the providers' words do come through
    assert sum(r.path.endswith("/responses") for r in leaky.requests) >= 10  # both APIs ran
    for secret in (PROVIDER_KEY, PLAIN_KEY, HEADER_SECRET, LITELLM_KEY, CLIENT_KEY, ADMIN_KEY):
        assert secret not in everything
    for address in (leaky.url, lite_up.url, f"127.0.0.1:{dead}", f"', {dead})"):
        assert address.removeprefix("http://") not in everything


async def _responses_outcome(client: openai.AsyncOpenAI, model: str, stream: bool) -> str:
    """The same through the Responses API: the text and every event, or the error."""
    try:
        if not stream:
            return (await client.responses.create(model=model, input="hi")).model_dump_json()
        events = await client.responses.create(model=model, input="hi", stream=True)
        return "".join([event.model_dump_json() async for event in events])
    except openai.APIError as exc:
        body = exc.body if isinstance(exc.body, dict | str) else None
        return f"{exc.message} {body}"
    except httpx.HTTPError as exc:
        return str(exc)


async def _outcome(client: openai.AsyncOpenAI, model: str, stream: bool) -> str:
    """Whatever the client gets: the text, the error's message, or the stream's error."""
    try:
        if not stream:
            reply = await client.chat.completions.create(model=model, messages=MESSAGES)
            return reply.model_dump_json()
        parts = []
        async for chunk in await client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True
        ):
            parts.append(chunk.model_dump_json())
        return "".join(parts)
    except openai.APIError as exc:
        body = exc.body if isinstance(exc.body, dict | str) else None
        return f"{exc.message} {body}"
    except httpx.HTTPError as exc:
        return str(exc)
