"""Decode throughput end to end, through the openai SDK on simulated providers: measured on
every answer and published (scores, samples, metrics); OpenRouter's `sort: "throughput"`,
`preferred_min_throughput` and `preferred_max_latency` change who serves; and the clients'
`GET /v1/models/{model}/endpoints` (off by default, on when configured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from proxy.core.domain import Pair, Score
from proxy.simulator import Market
from tests.e2e.conftest import (
    CLIENT_KEY,
    STEERING_KEY,
    Proxy,
    config_for,
    policy_file,
    running_proxy,
    scenario,
)
from tests.helpers import wait_until

# "quick" answers first but decodes slowly; "steady" starts later and decodes 100x faster
QUICK = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 40}
STEADY = {"warm_ttft": {"median_s": 0.08, "sigma": 0.1}, "tokens_per_s": 4000}
MODELS = {"m": {"quick": "org/M", "steady": "org/M"}}
HI = [{"role": "user", "content": "hello there"}]
# the order by estimate, no posterior draw; measure_both places its requests with
# provider.only, so their samples (source steered) count in full here
EXPLOIT = "defaults:\n  exploration_share: 0.0\n  uncertainty: {steered_weight: 1.0}\n"


def market() -> Market:
    return Market(scenario({"quick": {"org/M": QUICK}, "steady": {"org/M": STEADY}}))


def score(proxy: Proxy, provider: str) -> Score | None:
    return proxy.services.scoreboard.snapshot.get(Pair("m", provider))


async def measure_both(proxy: Proxy, count: int = 5) -> None:
    """`count` answers of 12 tokens from each provider, until both show their throughput."""
    client = proxy.client()
    for provider in ("quick", "steady"):
        for i in range(count):
            stream = await client.chat.completions.create(
                model="m", messages=HI, max_tokens=12, stream=i % 2 == 0,
                extra_body={"provider": {"only": [provider]}},
            )  # fmt: skip
            if i % 2 == 0:
                async for _ in stream:  # type: ignore[union-attr]
                    pass

    def measured() -> bool:
        return all((s := score(proxy, p)) is not None and s.throughput is not None
                   and s.throughput.n >= count for p in ("quick", "steady"))  # fmt: skip

    await wait_until(measured, timeout=10)


async def served_by(proxy: Proxy, **kw: Any) -> str:
    raw = await proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=HI, max_tokens=12, **kw
    )
    return str(raw.headers["x-ttft-router-provider"])


async def test_throughput_is_measured_on_every_answer_and_published(tmp_path: Path) -> None:
    async with market() as m, running_proxy(config_for(m, MODELS, auth=STEERING_KEY)) as proxy:
        await measure_both(proxy)
        quick, steady = score(proxy, "quick"), score(proxy, "steady")
        assert quick is not None and steady is not None
        assert quick.throughput is not None and steady.throughput is not None
        # 40 vs 4000 tokens/s: whatever the machine's load, the order holds by far
        assert steady.throughput.p50 > 5 * quick.throughput.p50
        # the simulator reports no usage unless asked: the answer's 12 chunks were counted
        assert quick.throughput.output_tokens == 12
        async with proxy.admin() as admin:
            scores = (await admin.get("/admin/scores", params={"model": "m"})).json()["pairs"]
            assert all(p["throughput"]["n"] >= 5 and "published" not in p for p in scores)
            asked = await admin.get("/admin/scores", params={"model": "m", "published": "true"})
            spans = asked.json()["pairs"][0]["published"]
            assert set(spans) == {"5m", "30m", "1d"} and spans["5m"]["uptime"] == 100.0
            assert spans["5m"]["throughput"]["p50"] > 0 and spans["5m"]["latency"]["p99"] > 0
            rows = (await admin.get("/admin/samples", params={"model": "m"})).json()["pairs"]
            sample = rows[0]["samples"][0]
            assert sample["prompt_tokens"] > 0 and sample["tokens_per_s"] > 0
            report = (await admin.get("/admin/report", params={"model": "m"})).json()
            assert {r["tokens_per_s_p50"] for r in report["rows"]} == {
                quick.throughput.p50, steady.throughput.p50}  # fmt: skip
            assert {p["provider"] for p in report["published"]} == {"quick", "steady"}
            markdown = await admin.get("/admin/report", params={"format": "markdown"})
            assert "## Last 5 minutes, 30 minutes and day" in markdown.text
            metrics = (await admin.get("/metrics")).text
        assert 'stat="throughput_p50"' in metrics and 'stat="p75"' in metrics
        # the Responses API and a chat stream with usage: the provider's own count
        before = proxy.services.scoreboard.window_samples(Pair("m", "steady"))[-1].timestamp
        client = proxy.client()
        steady = {"provider": {"only": ["steady"]}}
        stream = await client.responses.create(
            model="m", input="hello there", max_output_tokens=7, stream=True, extra_body=steady
        )
        async for _ in stream:
            pass
        chat = await client.chat.completions.create(
            model="m", messages=HI, max_tokens=9, stream=True, extra_body=steady,
            stream_options={"include_usage": True},
        )  # fmt: skip
        async for _ in chat:
            pass

        def newest() -> list[int | None]:
            window = proxy.services.scoreboard.window_samples(Pair("m", "steady"))
            return [s.output_tokens for s in window if s.timestamp > before]

        assert await wait_until(lambda: len(newest()) == 2 and newest(), timeout=5) == [7, 9]


async def test_throughput_and_latency_preferences_change_who_serves(tmp_path: Path) -> None:
    async with (
        market() as m,
        running_proxy(
            config_for(m, MODELS, policy_file=policy_file(tmp_path, EXPLOIT), auth=STEERING_KEY)
        ) as proxy,
    ):
        await measure_both(proxy)
        assert await served_by(proxy) == "quick"  # by TTFT, quick answers first
        cases: list[tuple[dict[str, Any], str]] = [
            ({"extra_body": {"provider": {"sort": "throughput"}}}, "steady"),
            ({"extra_body": {"provider": {"sort": {"by": "throughput", "partition": "none"}}}},
             "steady"),
            ({"extra_headers": {"x-ttft-router-provider-sort": "throughput"}}, "steady"),
            ({"extra_body": {"provider": {"preferred_min_throughput": 500}}}, "steady"),
            ({"extra_body": {"provider": {"preferred_min_throughput": {"p90": 500}}}}, "steady"),
            ({"extra_headers": {"x-ttft-router-provider-preferred-min-throughput": "p50=500"}},
             "steady"),
            # steady's TTFT (~80 ms) misses 30 ms: deprioritised under its sort, not excluded
            ({"extra_body": {"provider": {"sort": "throughput", "preferred_max_latency": 0.03}}},
             "quick"),
            ({"extra_body": {"provider": {"sort": "throughput",
                                          "preferred_max_latency": {"p50": 0.03, "p90": 0.05}}}},
             "quick"),
            # every pair misses: nobody is excluded, the sort decides
            ({"extra_body": {"provider": {"sort": "throughput", "preferred_max_latency": 0.001}}},
             "steady"),
        ]  # fmt: skip
        for kw, expected in cases:
            assert await served_by(proxy, **kw) == expected, kw
        raw = await proxy.client().chat.completions.with_raw_response.create(
            model="m", messages=HI, max_tokens=12,
            extra_body={"provider": {"preferred_min_throughput": 500}},
        )  # fmt: skip
        decision = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
        assert decision["controls"] == [
            "preferred_min_throughput p50 500 tok/s: steady meet it; quick miss it "
            "(deprioritised)"]  # fmt: skip
        assert [c["provider"] for c in decision["candidates"]][:2] == ["steady", "quick"]


async def test_the_endpoints_route_is_off_by_default_and_shows_what_is_configured() -> None:
    models = {**MODELS, "org/slashed": {"quick": "org/M"}}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with market() as m:
        off_by_default = running_proxy(config_for(m, models))
        async with off_by_default as proxy, httpx.AsyncClient(base_url=proxy.url) as web:
            web.headers.update(headers)
            off = await web.get("/v1/models/m/endpoints")
            unknown = await web.get("/v1/nothing-here")
            assert off.status_code == unknown.status_code == 404
            assert off.json()["error"]["code"] == unknown.json()["error"]["code"]
            assert (await web.get("/v1/models/m")).json()["id"] == "m"
        on = config_for(m, models, client_stats={"enabled": True}, auth=STEERING_KEY)
        async with running_proxy(on) as proxy:
            await measure_both(proxy, count=2)
            async with httpx.AsyncClient(base_url=proxy.url) as web:
                assert (await web.get("/v1/models/m/endpoints")).status_code == 401
                web.headers.update(headers)
                listed = (await web.get("/v1/models/m/endpoints")).json()["data"]
                missing = await web.get("/v1/models/zz/endpoints")
                slashed = await web.get("/v1/models/org/slashed/endpoints")
            assert (
                missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
            )
            assert slashed.json()["data"]["id"] == "org/slashed"
            assert listed["id"] == "m"
            names = [e["provider_name"] for e in listed["endpoints"]]
            assert names == ["provider-1", "provider-2"]
            assert "quick" not in str(listed) and "steady" not in str(listed)
            first = listed["endpoints"][0]
            assert first["uptime_last_30m"] == 100.0 and first["latency_last_5m"]["p50"] > 0
            assert set(first["throughput_last_1d"]) == {"p50", "p75", "p90", "p99"}
        named = config_for(m, models, client_stats={"enabled": True, "provider_names": True})
        async with running_proxy(named) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, headers=headers) as web:
                listed = (await web.get("/v1/models/m/endpoints")).json()["data"]
            endpoints = listed["endpoints"]
            assert [e["provider_name"] for e in endpoints] == ["quick", "steady"]
            assert endpoints[0]["uptime_last_5m"] is None  # nothing measured yet
