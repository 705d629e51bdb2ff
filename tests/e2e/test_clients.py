"""Named client keys end to end, through the openai SDK, on one proxy (memory store): a key
over its rate gets OpenAI's 429 with Retry-After and the x-ratelimit-* headers; over its
budget, 429 `insufficient_quota`; a key cannot see or reach another key's model nor use a
control it lacks; a decision, its samples and the metrics name the key; a hedge is charged
to the hedged request's key, a probe to nobody; /admin/clients shows use and spend, never
a key; keys are reloaded with the config file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from proxy.core.domain import Pair
from proxy.settings.config import load_config
from proxy.simulator import Market
from tests.e2e.conftest import (
    ADMIN_KEY,
    CLIENT_KEY,
    Proxy,
    config_for,
    policy_file,
    running_proxy,
    scenario,
)
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

FAST = {"warm_ttft": {"median_s": 0.003, "sigma": 0.1}, "tokens_per_s": 20000}
HI = [{"role": "user", "content": "hi"}]
KEYS = {  # each at least 24 characters, none a placeholder
    "app-a": "app-a-7f3c91d2e8b4a6c05f1e",
    "app-b": "app-b-19e4c7a2d05b3f86e7c1",
    "app-m": "app-m-c4d8e2a61b9f07e3a5d2",
    "app-t": "app-t-5a0e9c3f7d21b8e64c9a",
    "app-c": "app-c-e6b2d9f4a17c03e8b5d1",
}
PRICE = {"prompt_per_million": 2.0, "completion_per_million": 8.0}


def market() -> Market:
    return Market(scenario({"p": {"m-p": FAST, "o-p": FAST}}))


def auth(clients: dict[str, dict[str, Any]], **more: Any) -> dict[str, Any]:
    named = {name: {"key": KEYS[name], **rules} for name, rules in clients.items()}
    return {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "clients": named,
            "client_header": True, **more}  # fmt: skip


def config(m: Market, clients: dict[str, dict[str, Any]], **kw: Any) -> Any:
    priced = {name: {**entry, "price": PRICE} for name, entry in m.provider_configs().items()}
    return config_for(m, {"m": {"p": "m-p"}, "other": {"p": "o-p"}}, extra_providers=priced,
                      auth=auth(clients), **kw)  # fmt: skip


def client_of(proxy: Proxy, name: str) -> openai.AsyncOpenAI:
    return proxy.client(api_key=KEYS[name])


async def clients_view(proxy: Proxy) -> dict[str, dict[str, Any]]:
    async with proxy.admin() as admin:
        reply = await admin.get("/admin/clients")
    assert reply.status_code == 200, reply.text
    for key in (*KEYS.values(), CLIENT_KEY):
        assert key not in reply.text  # never a key
    return {row["name"]: row for row in reply.json()["clients"]}


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_the_headers() -> None:
    clients = {"app-a": {"limits": {"requests_per_minute": 3}},
               "app-t": {"limits": {"tokens_per_minute": 100}}}  # fmt: skip
    async with market() as m, running_proxy(config(m, clients)) as proxy:
        app_a = client_of(proxy, "app-a")
        for left in (2, 1, 0):
            raw = await app_a.chat.completions.with_raw_response.create(
                model="m", messages=HI, max_tokens=2
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
            assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
            assert raw.headers["x-ttft-router-client"] == "app-a"
        with pytest.raises(openai.RateLimitError) as refused:
            await app_a.chat.completions.create(model="m", messages=HI, max_tokens=2)
        error = refused.value
        assert error.status_code == 429 and error.code == "rate_limit_exceeded"
        assert error.type == "requests" and "Limit 3, Used 3" in error.message
        headers = error.response.headers
        assert 1 <= int(headers["retry-after"]) <= 60 and int(headers["retry-after-ms"]) > 0
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert m.stats("p")["requests"] == 3  # the refused request went nowhere
        # another key is not limited by app-a's count
        await proxy.client().chat.completions.create(model="m", messages=HI, max_tokens=2)

        app_t = client_of(proxy, "app-t")
        with pytest.raises(openai.RateLimitError, match="Request too large") as large:
            await app_t.chat.completions.create(model="m", messages=HI, max_tokens=500)
        assert large.value.type == "tokens"
        raw = await app_t.chat.completions.with_raw_response.create(
            model="m", messages=HI, max_tokens=60
        )
        usage = raw.parse().usage
        assert usage is not None and raw.headers["x-ratelimit-limit-tokens"] == "100"
        with pytest.raises(openai.RateLimitError) as tokens:  # 60 + the prompt, then 60 more
            await app_t.chat.completions.create(model="m", messages=HI, max_tokens=60)
        assert tokens.value.type == "tokens"
        assert f"Used {usage.total_tokens}," in tokens.value.message  # the answer's own count
        view = await clients_view(proxy)
        assert view["app-a"]["usage"]["requests_last_minute"] == 3
        assert view["app-a"]["this_replica"]["refused"] == {"requests": 1}
        assert view["app-t"]["usage"]["tokens_last_minute"] == usage.total_tokens
        assert view["app-t"]["this_replica"]["refused"] == {"too_large": 1, "tokens": 1}


async def test_a_concurrency_limit_frees_its_slot_when_the_answer_ends(tmp_path: Path) -> None:
    async with scripted_provider() as slow:
        config = load_config(write_config(tmp_path, slow.base_url, {
            "app-c": {"key": KEYS["app-c"], "limits": {"concurrent_requests": 1}}}))  # fmt: skip
        async with running_proxy(config) as proxy:
            app_c = client_of(proxy, "app-c")
            slow.chunk_delay_s = 0.5
            first = asyncio.create_task(
                app_c.chat.completions.create(model="m", messages=HI, stream=False)
            )
            await wait_until(lambda: len(slow.requests) == 1, timeout=5)
            with pytest.raises(openai.RateLimitError, match="concurrent") as busy:
                await app_c.chat.completions.create(model="m", messages=HI)
            assert busy.value.response.headers["x-ratelimit-remaining-concurrent"] == "0"
            await first
            slow.chunk_delay_s = 0.0
            for _ in range(3):  # one after the other: each finds the slot free
                await app_c.chat.completions.create(model="m", messages=HI)


async def test_a_key_over_its_budget_gets_insufficient_quota() -> None:
    clients = {"app-b": {"budget": {"usd_per_day": 0.000001, "usd_per_month": 10}}}
    async with market() as m, running_proxy(config(m, clients)) as proxy:
        app_b = client_of(proxy, "app-b")
        raw = await app_b.chat.completions.with_raw_response.create(
            model="m", messages=HI, max_tokens=20
        )  # admitted: nothing spent yet; it costs more than the day's budget
        decision = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
        assert decision["client"] == "app-b" and decision["charged_usd"] > 0.000001
        assert decision["charged_usd"] == pytest.approx(decision["cost_usd"])  # one attempt
        with pytest.raises(openai.RateLimitError) as refused:
            await app_b.chat.completions.create(model="m", messages=HI, max_tokens=20)
        error = refused.value
        assert error.code == "insufficient_quota" and error.type == "insufficient_quota"
        assert error.response.headers["x-should-retry"] == "false"
        assert "budget of USD 0.00 per day" in error.message
        view = (await clients_view(proxy))["app-b"]
        assert view["spend"]["usd_today"] == pytest.approx(decision["charged_usd"])
        assert view["spend"]["usd_left_today"] == 0.0
        assert view["usage"]["refused_today"] == 1 and view["last_seen"] is not None


async def test_a_key_cannot_see_another_model_nor_use_a_control_it_lacks() -> None:
    clients = {"app-m": {"models": ["m"], "controls": ["sort"], "max_tokens": 5, "max_n": 1}}
    async with market() as m, running_proxy(config(m, clients)) as proxy:
        app_m, anonymous = client_of(proxy, "app-m"), proxy.client()
        assert [x.id async for x in app_m.models.list()] == ["m"]
        assert [x.id async for x in anonymous.models.list()] == ["m", "other"]
        messages = {}
        for model in ("other", "nobody-has-this"):  # another key's model looks unknown
            with pytest.raises(openai.NotFoundError) as missing:
                await app_m.chat.completions.create(model=model, messages=HI, max_tokens=2)
            assert missing.value.code == "model_not_found"
            messages[model] = missing.value.message.replace(model, "X")
            with pytest.raises(openai.NotFoundError):
                await app_m.models.retrieve(model)
        assert messages["other"] == messages["nobody-has-this"]
        assert "(known: m)" in messages["other"]
        sort = {"provider": {"sort": "price"}}
        await app_m.chat.completions.create(model="m", messages=HI, max_tokens=2, extra_body=sort)
        with pytest.raises(openai.PermissionDeniedError, match="granted: sort"):
            await app_m.chat.completions.create(
                model="m", messages=HI, max_tokens=2, extra_body={"provider": {"only": ["p"]}}
            )
        with pytest.raises(openai.PermissionDeniedError, match="granted: none"):  # policy: none
            await anonymous.chat.completions.create(model="m", messages=HI, extra_body=sort)
        for too_much in ({"max_tokens": 6}, {"max_completion_tokens": 6}, {"n": 2}):
            with pytest.raises(openai.BadRequestError, match="for client 'app-m'"):
                await app_m.chat.completions.create(model="m", messages=HI, **too_much)
        assert m.stats("p")["requests"] == 1  # only the permitted request went upstream
        refused = (await clients_view(proxy))["app-m"]["this_replica"]["refused"]
        assert refused == {"model": 2, "control": 1, "caps": 3}


async def test_a_decision_its_samples_and_the_metrics_name_the_key() -> None:
    clients = {"app-a": {"limits": {"requests_per_minute": 100}}}
    async with market() as m, running_proxy(config(m, clients)) as proxy:
        raw = await client_of(proxy, "app-a").chat.completions.with_raw_response.create(
            model="m", messages=HI, max_tokens=3
        )
        decision = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
        assert decision["client"] == "app-a"
        anonymous = await proxy.client().chat.completions.with_raw_response.create(
            model="m", messages=HI, max_tokens=3
        )
        assert anonymous.headers["x-ttft-router-client"] == "anonymous"
        assert "x-ratelimit-limit-requests" not in anonymous.headers  # no limits: no headers
        board = proxy.services.scoreboard
        samples = await wait_until(lambda: len(board.window_samples(Pair("m", "p"))) == 2 and
                                   board.window_samples(Pair("m", "p")))  # fmt: skip
        assert sorted(s.client for s in samples) == ["anonymous", "app-a"]
        assert board.snapshot[Pair("m", "p")].n == 2  # one window, both clients
        async with proxy.admin() as admin:
            text = (await admin.get("/metrics")).text
        assert 'ttft_router_client_requests_total{client="app-a"} 1.0' in text
        assert 'ttft_router_client_requests_total{client="anonymous"} 1.0' in text
        assert 'ttft_router_client_cost_usd_total{client="app-a"}' in text
        view = await clients_view(proxy)  # no limits: counted by the day, not the minute
        assert view["anonymous"]["usage"]["requests_last_minute"] is None
        assert view["anonymous"]["usage"]["requests_today"] == 1
        assert view["app-a"]["usage"]["requests_last_minute"] == 1


async def test_a_hedge_is_charged_to_the_hedged_key_and_a_probe_to_nobody(
    tmp_path: Path,
) -> None:
    policy = ("defaults:\n  min_samples: 3\n  exploration_share: 0\n"
              "  hedge: {enabled: true, delay_s: 0.2, budget_share: 1.0}\n")  # fmt: skip
    async with scripted_provider() as slow, scripted_provider() as backup:
        path = write_config(tmp_path, slow.base_url, {"app-a": {"key": KEYS["app-a"]}},
                            backup=backup.base_url, policy=policy)  # fmt: skip
        async with running_proxy(load_config(path)) as proxy:
            await proxy.prefer("p0", "p1")
            slow.delay_s = 30.0
            raw = await client_of(proxy, "app-a").chat.completions.with_raw_response.create(
                model="m", messages=HI
            )
            assert raw.headers["x-ttft-router-provider"] == "p1"
            decision = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
            assert decision["hedge"]["fired"] and len(decision["attempts"]) == 2
            board = proxy.services.scoreboard
            prompt = await wait_until(lambda: next(
                (s.prompt_tokens for s in board.window_samples(Pair("m", "p1"))
                 if s.client == "app-a"), None))  # fmt: skip
            # no usage in these streams: both attempts' prompts, the winner's first token
            expected = (2 * prompt * 2.0 + 8.0) / 1e6
            assert decision["charged_usd"] == pytest.approx(expected)
            view = await clients_view(proxy)
            assert view["app-a"]["spend"]["usd_today"] == pytest.approx(expected)
            slow.delay_s = 0.0
            async with proxy.admin() as admin:
                probe = await admin.post("/admin/probe", params={"model": "m", "provider": "p0"})
            assert probe.status_code == 200, probe.text
            after = await clients_view(proxy)
            assert after["app-a"]["spend"]["usd_today"] == pytest.approx(expected)
            assert after["anonymous"]["spend"]["usd_today"] == 0.0


async def test_keys_are_reloaded_with_the_config_file(tmp_path: Path) -> None:
    async with scripted_provider() as p0:
        path = write_config(tmp_path, p0.base_url, {"app-a": {"key": KEYS["app-a"]}})
        async with running_proxy(load_config(path)) as proxy:
            await client_of(proxy, "app-a").chat.completions.create(model="m", messages=HI)
            write_config(tmp_path, p0.base_url, {"app-b": {"key": KEYS["app-b"]}})
            async with proxy.admin() as admin:
                reloaded = await admin.post("/admin/clients/reload")
            assert reloaded.json() == {"reloaded": True, "clients": ["app-b"]}
            await client_of(proxy, "app-b").chat.completions.create(model="m", messages=HI)
            with pytest.raises(openai.AuthenticationError):
                await client_of(proxy, "app-a").chat.completions.create(model="m", messages=HI)
            # a bad file keeps the last good clients, and says why
            write_config(tmp_path, p0.base_url, {"app-c": {"key": "too-short"}})
            async with proxy.admin() as admin:
                refused = await admin.post("/admin/clients/reload")
                assert refused.status_code == 400 and "auth.clients.app-c.key" in refused.text
                view = (await admin.get("/admin/clients")).json()
            assert "auth.clients.app-c.key" in view["reload"]["last_error"]
            await client_of(proxy, "app-b").chat.completions.create(model="m", messages=HI)
            # the file's change alone is enough (checked every second)
            write_config(tmp_path, p0.base_url, {"app-c": {"key": KEYS["app-c"]}})
            bearer = {"Authorization": f"Bearer {KEYS['app-c']}"}
            http = httpx.AsyncClient(base_url=proxy.url + "/v1", timeout=5, headers=bearer)
            async with http:
                await wait_until(lambda: _status(http), timeout=5, interval=0.1)


async def _status(http: httpx.AsyncClient) -> bool:
    return (await http.get("/models")).status_code == 200


def write_config(
    tmp_path: Path, base_url: str, clients: dict[str, Any], backup: str | None = None,
    policy: str = "defaults: {}\n",
) -> Path:  # fmt: skip
    """A config file (hot reload reads it again) with model m on p0 (and p1 at `backup`)."""
    urls = [base_url] if backup is None else [base_url, backup]
    providers = {f"p{i}": {"kind": "openai", "base_url": url, "api_key": "k",
                           "price": {"prompt_per_million": 2.0, "completion_per_million": 8.0}}
                 for i, url in enumerate(urls)}  # fmt: skip
    data = {
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "clients": clients},
        "providers": providers,
        "models": {"m": {"providers": {name: "u" for name in providers}}},
        "buffer": {"flush_interval_s": 0.02},
        "scoreboard": {"refresh_s": 0.05},
        "prober": {"enabled": False},
        "policies": [str(policy_file(tmp_path, policy))],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
