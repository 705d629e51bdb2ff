"""Forward only what is meant, and let no client take a provider out for everyone (issue
24, items 2 and 4), through the openai SDK against scripted providers that record every
body they get: unknown fields are refused, a provider's extras reach only it, the policy
strips and forces, content-part URLs are checked, a stateful Responses request goes to one
provider once; failures the request caused neither open a circuit nor exclude a pair, a
Retry-After is capped, a client-placed request's sample is marked steered, and trials
during a total outage are paced."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Proxy, running_proxy, scripted_config
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
ORDERED = "defaults:\n  order: [p0, p1]\n  exploration_share: 0\n"


async def excluded_because(proxy: Proxy, provider: str) -> str | None:
    async with proxy.admin() as admin:
        view = (await admin.get("/admin/explain", params={"model": "m"})).json()
    row = next(c for c in view["candidates"] if c["provider"] == provider)
    reason: str | None = row["excluded_because"]
    return reason


async def test_unknown_fields_are_refused_and_a_providers_extras_reach_only_it(
    tmp_path: Path,
) -> None:
    async with (
        scripted_provider("500") as vllm,
        scripted_provider() as other,
        running_proxy(scripted_config(
            tmp_path, ORDERED, vllm, other, settings={"p0": {"extra_fields": ["top_k"]}}
        )) as proxy,
    ):  # fmt: skip
        client = proxy.client()
        for field in ("models", "plugins", "kv_transfer_params", "background"):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(
                    model="m", messages=MESSAGES, extra_body={field: ["x"]}
                )
            assert refused.value.body["param"] == field  # type: ignore[index]
            assert f"Unrecognized request argument supplied: {field}" in str(refused.value)
        assert not vllm.requests and not other.requests
        # top_k is p0's extra: p0 gets it (and fails), the failover to p1 goes without it;
        # service_tier is stripped by the default policy
        reply = await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_body={"top_k": 5}, service_tier="priority"
        )
        assert reply.choices[0].message.content == "hello world"
    assert vllm.requests[0].body["top_k"] == 5
    assert "top_k" not in other.requests[0].body
    assert "service_tier" not in vllm.requests[0].body | other.requests[0].body


async def test_policy_forces_store_false_on_responses_and_content_urls_are_checked(
    tmp_path: Path,
) -> None:
    async with (
        scripted_provider() as p0,
        running_proxy(scripted_config(
            tmp_path, "defaults: {}\n", p0, settings={"p0": {"responses": True}}
        )) as proxy,
    ):  # fmt: skip
        client = proxy.client()
        await client.responses.create(model="m", input="hi", store=True)
        assert p0.requests[-1].body["store"] is False
        image = {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}
        message: Any = {"role": "user", "content": [{"type": "text", "text": "see"}, image]}
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="m", messages=[message])
        assert refused.value.body["param"] == "messages[0].content[1].image_url.url"  # type: ignore[index]
        assert "only http(s) and data URLs" in str(refused.value)
        assert len(p0.requests) == 1


async def test_a_stateful_responses_request_goes_to_one_provider_once(tmp_path: Path) -> None:
    policy = ORDERED + "  hedge: {enabled: true, budget_share: 1.0}\n  fields: {force: {}}\n"
    on = {"responses": True}
    async with (
        scripted_provider("500") as p0,
        scripted_provider() as p1,
        running_proxy(
            scripted_config(tmp_path, policy, p0, p1, settings={"p0": on, "p1": on})
        ) as proxy,
    ):
        client = proxy.client()
        with pytest.raises(openai.APIStatusError) as failed:
            await client.responses.create(model="m", input="again", previous_response_id="r_1")
        assert failed.value.status_code == 502
        assert len(p0.requests) == 1 and not p1.requests  # never failed over
        plain = await client.responses.create(model="m", input="hi")  # this one fails over
        assert plain.output_text == "hello world" and len(p1.requests) == 1
        # a text completion's `prompt` is its prompt, not a stored one: it fails over too
        await client.completions.create(model="m", prompt="hi")
        assert len(p1.requests) == 2 and p1.requests[-1].path.endswith("/completions")


async def test_failures_the_request_caused_neither_open_a_circuit_nor_exclude_the_pair(
    tmp_path: Path,
) -> None:
    policy = ORDERED + "  circuit: {consecutive_errors: 2, cooldown_s: 300}\n"
    async with (
        scripted_provider("filtered-before") as p0,
        scripted_provider() as p1,
        running_proxy(scripted_config(tmp_path, policy, p0, p1)) as proxy,
    ):
        client = proxy.client()
        # an error event that blames the prompt: the client's 400, no failover, no circuit
        for _ in range(4):
            with pytest.raises(openai.BadRequestError, match="The prompt was filtered"):
                await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert len(p0.requests) == 4 and not p1.requests
        assert await excluded_because(proxy, "p0") is None
        # a 429 for one prompt above the provider's per-minute limit: failed over, and the
        # pair is not out for anyone else (its Retry-After is the prompt's, not the pair's)
        p0.mode, p0.retry_after = "429-too-large", "30"
        for _ in range(4):
            reply = await client.chat.completions.create(model="m", messages=MESSAGES)
            assert reply.choices[0].message.content == "hello world"
        assert len(p0.requests) == 8 and len(p1.requests) == 4
        assert await excluded_because(proxy, "p0") is None
        async with proxy.admin() as admin:
            metrics = (await admin.get("/metrics")).text
        for kind in ("rejected", "too_large"):
            line = f'ttft_router_request_faults_total{{kind="{kind}",model="m",provider="p0"}} 4.0'
            assert line in metrics
        # a provider's own rate limit: out for its Retry-After, an hour capped at 60 s
        p0.mode, p0.retry_after = "429", "3600"
        await client.chat.completions.create(model="m", messages=MESSAGES)
        reason = await excluded_because(proxy, "p0")
        assert reason is not None and reason.startswith("rate-limited (429) for another")
        assert 55.0 <= float(reason.split()[-2]) <= 60.0


async def test_a_request_the_clients_controls_placed_is_measured_as_steered(tmp_path: Path) -> None:
    policy = "defaults:\n  client_controls: [only]\n"
    async with (
        scripted_provider() as p0,
        scripted_provider() as p1,
        running_proxy(scripted_config(tmp_path, policy, p0, p1)) as proxy,
    ):
        client = proxy.client()
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_body={"provider": {"only": ["p1"]}}
        )
        await client.chat.completions.create(model="m", messages=MESSAGES)

        async def sources() -> list[str] | None:
            async with proxy.admin() as admin:
                rows = (await admin.get("/admin/samples", params={"model": "m"})).json()
            found = sorted(s["source"] for pair in rows["pairs"] for s in pair["samples"])
            return found if len(found) == 2 else None

        assert await wait_until(sources, timeout=5) == ["passive", "steered"]


async def test_during_a_total_outage_a_dead_provider_gets_about_one_trial_a_second(
    tmp_path: Path,
) -> None:
    """Providers that refuse at once: without pacing, every request would be a trial. The
    bound is in the elapsed time the loop measured (an upper bound: a slow machine only
    allows more); recovery is then seen by the next trial."""
    policy = ("defaults:\n  circuit: {consecutive_errors: 1, cooldown_s: 300, "
              "trial_interval_s: 1}\n")  # fmt: skip
    async with (
        scripted_provider("500") as p0,
        scripted_provider("500") as p1,
        running_proxy(scripted_config(tmp_path, policy, p0, p1)) as proxy,
    ):
        client = proxy.client()
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert len(p0.requests) == len(p1.requests) == 1  # both circuits open
        began = time.monotonic()
        waits = []
        for _ in range(60):
            try:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            except openai.APIStatusError as exc:
                if exc.status_code == 503:  # no trial due: told when to ask again
                    waits.append(int(exc.response.headers["retry-after"]))
        elapsed = time.monotonic() - began
        trials = len(p0.requests) + len(p1.requests) - 2
        assert trials <= 2 * (elapsed / 1.0 + 1), (trials, elapsed)
        assert waits and all(1 <= w <= 2 for w in waits), waits
        p0.mode = p1.mode = "ok"

        async def served() -> bool:
            try:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            except openai.APIStatusError:
                return False
            return True

        await wait_until(served, timeout=5)
