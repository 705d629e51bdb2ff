"""Request controls end to end, through the openai SDK (extra_body / extra_headers): each
control changes the provider that served (x-ttft-router-provider and the simulated
providers' counts), a control not granted is a 403 naming it (none is, unless the policy or
the client's key grants it), a contradictory one a 400, `only` a provider that is down
without fallbacks is a 503 naming it, and the `provider` field never reaches a provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.simulator import Market
from tests.e2e.conftest import (
    Proxy,
    config_for,
    policy_file,
    running_proxy,
    scenario,
    scripted_config,
)
from tests.fakes.scripted import closed_port, scripted_provider

FAST = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 5000}
NAMES = ("a", "b", "c")
MODELS = {"m": {p: "org/M-1" for p in NAMES}}
# USD per million tokens: c is the cheapest, a the dearest
PRICES = {"a": (3.0, 9.0), "b": (2.0, 6.0), "c": (1.0, 2.0)}
MESSAGES = [{"role": "user", "content": "hello there"}]
GRANTED = "defaults:\n  client_controls: [order, only, ignore, allow_fallbacks, sort, max_price]\n"


def market() -> Market:
    return Market(scenario({p: {"org/M-1": FAST} for p in NAMES}))


def priced(m: Market, tmp_path: Path, policy: str = GRANTED) -> Any:
    providers = {
        name: {**entry, "price": {"prompt_per_million": PRICES[name][0],
                                  "completion_per_million": PRICES[name][1]}}
        for name, entry in m.provider_configs().items()
    }  # fmt: skip
    return config_for(m, MODELS, extra_providers=providers,
                      policy_file=policy_file(tmp_path, policy))  # fmt: skip


async def served_by(proxy: Proxy, **kw: Any) -> str:
    raw = await proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, max_tokens=4, **kw
    )
    return str(raw.headers["x-ttft-router-provider"])


def requests_of(m: Market) -> dict[str, int]:
    return {p: m.stats(p)["requests"] for p in NAMES}


async def test_each_control_changes_the_provider_that_served(tmp_path: Path) -> None:
    async with market() as m, running_proxy(priced(m, tmp_path)) as proxy:
        cases: list[tuple[dict[str, Any], set[str]]] = [
            ({"extra_body": {"provider": {"only": ["b"]}}}, {"b"}),
            ({"extra_headers": {"x-ttft-router-provider-only": "c"}}, {"c"}),
            ({"extra_body": {"provider": {"order": ["c", "a"]}}}, {"c"}),
            ({"extra_headers": {"x-ttft-router-provider-order": "b,a"}}, {"b"}),
            ({"extra_body": {"provider": {"ignore": ["a", "b"]}}}, {"c"}),
            ({"extra_headers": {"x-ttft-router-provider-ignore": "a,c"}}, {"b"}),
            ({"extra_body": {"provider": {"sort": "price"}}}, {"c"}),
            ({"extra_headers": {"x-ttft-router-provider-sort": "price"}}, {"c"}),
            ({"extra_body": {"provider": {"max_price": {"completion": 2}}}}, {"c"}),
            ({"extra_headers": {"x-ttft-router-provider-max-price-prompt": "2.5"}}, {"b", "c"}),
            ({"extra_body": {"provider": {"order": ["a"], "allow_fallbacks": False}}}, {"a"}),
        ]
        for kw, expected in cases:
            before = requests_of(m)
            for _ in range(3):
                provider = await served_by(proxy, **kw)
                assert provider in expected, (kw, provider)
            after = requests_of(m)
            grew = {p for p in NAMES if after[p] > before[p]}
            assert grew <= expected and sum(after.values()) - sum(before.values()) == 3, kw
        async with proxy.admin() as admin:
            rows = (await admin.get("/admin/decisions", params={"model": "m", "limit": 1})).json()
        assert rows["decisions"][0]["controls"] == [
            "provider.order a (body)", "allow_fallbacks false (body)"]  # fmt: skip


async def test_a_control_not_granted_is_a_403_a_contradictory_one_a_400(tmp_path: Path) -> None:
    policy = "models:\n  m:\n    client_controls: [sort]\n"
    async with market() as m, running_proxy(priced(m, tmp_path, policy)) as proxy:
        client = proxy.client()
        with pytest.raises(openai.PermissionDeniedError) as forbidden:
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_body={"provider": {"only": ["b"]}}
            )
        error = forbidden.value.body
        assert isinstance(error, dict) and error["param"] == "provider.only"
        assert "provider.only is not granted to this key" in error["message"]
        with pytest.raises(openai.PermissionDeniedError, match=r"provider\.order is not granted"):
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-ttft-router-provider-order": "a"}
            )
        with pytest.raises(openai.BadRequestError, match=r"provider\.sort must be one of"):
            await served_by(proxy, extra_body={"provider": {"sort": "cheapest"}})
        assert await served_by(proxy, extra_body={"provider": {"sort": "price"}}) == "c"
        assert sum(requests_of(m).values()) == 1  # nothing rejected went upstream


async def test_only_a_provider_that_is_down_without_fallbacks_is_a_503_naming_it(
    tmp_path: Path,
) -> None:
    policy = GRANTED + "  circuit: {consecutive_errors: 1, cooldown_s: 300}\n"
    async with market() as m:
        down = {"down": {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}}
        config = config_for(m, {"m": {**MODELS["m"], "down": "org/M-1"}}, extra_providers=down,
                            policy_file=policy_file(tmp_path, policy))  # fmt: skip
        async with running_proxy(config) as proxy:
            client = proxy.client()
            control = {"provider": {"only": ["down"], "allow_fallbacks": False}}
            # its first failure is a 502 from the attempt; then its circuit is open: 503
            with pytest.raises(openai.APIStatusError, match="down") as first:
                await client.chat.completions.create(model="m", messages=MESSAGES,
                                                     extra_body=control)  # fmt: skip
            assert first.value.status_code == 502
            with pytest.raises(openai.APIStatusError, match="down: circuit open") as second:
                await client.chat.completions.create(model="m", messages=MESSAGES,
                                                     extra_body=control)  # fmt: skip
            assert second.value.status_code == 503
            assert sum(requests_of(m).values()) == 0  # no fallback to a, b or c
            # with fallbacks allowed it is served elsewhere
            fallback = {"provider": {"order": ["down"]}}
            assert await served_by(proxy, extra_body=fallback) in NAMES


async def test_the_provider_field_never_reaches_the_upstream(tmp_path: Path) -> None:
    async with scripted_provider() as p0, scripted_provider() as p1:
        config = scripted_config(
            tmp_path, GRANTED, p0, p1, settings={"p1": {"extra_fields": ["custom_field"]}}
        )
        async with running_proxy(config) as proxy:
            client = proxy.client()
            for stream in (False, True):
                raw = await client.chat.completions.with_raw_response.create(
                    model="m", messages=MESSAGES, stream=stream,
                    extra_body={"provider": {"only": ["p1"]}, "custom_field": 7},
                )  # fmt: skip
                assert raw.headers["x-ttft-router-provider"] == "p1"
            assert not p0.requests and len(p1.requests) == 2
            for seen in p1.requests:
                assert "provider" not in seen.body and seen.body["custom_field"] == 7
