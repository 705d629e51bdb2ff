"""The prober against simulated providers (real servers), one proxy, the in-memory store.

Every market runs at TIME_SCALE and so does the prober (`prober.time_scale`): the policy's
probe times are a real market's seconds, as an operator would write them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.simulator import Market, Scenario
from tests.e2e.conftest import Proxy, config_for, policy_file, running_proxy, scenario
from tests.helpers import wait_until

TIME_SCALE = 0.01
PROBER = {"enabled": True, "time_scale": TIME_SCALE}
FAST = {"warm_ttft": {"median_s": 0.5, "sigma": 0.1}, "tokens_per_s": 2000}
HI = [{"role": "user", "content": "hi"}]


def probe_policy(tmp_path: Path, probe: str, floor_s: float = 2.0, **defaults: str) -> Path:
    extra = "".join(f", {key}: {value}" for key, value in defaults.items())
    return policy_file(
        tmp_path,
        f"defaults: {{min_samples: 3, cold_start: {{floor_s: {floor_s * TIME_SCALE}}}, "
        f"probe: {{{probe}}}{extra}}}\n",
    )


async def prober_status(proxy: Proxy) -> dict[str, Any]:
    async with proxy.admin() as admin:
        response = await admin.get("/admin/prober")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def pair_status(status: dict[str, Any], provider: str) -> dict[str, Any]:
    (row,) = [p for p in status["pairs"] if p["provider"] == provider]
    return row


def requests_of(market: Market, provider: str) -> int:
    return market.stats(provider)["requests"]


async def test_probes_fill_the_windows_and_show_in_admin_and_metrics(tmp_path: Path) -> None:
    policy = probe_policy(tmp_path, "interval_s: 60, burst_spacing_s: 5")
    async with Market(
        scenario({"p": {"m-p": FAST}, "q": {"m-q": FAST}}, time_scale=TIME_SCALE)
    ) as market:
        config = config_for(
            market, {"m": {"p": "m-p", "q": "m-q"}}, policy_file=policy, prober=PROBER
        )
        async with running_proxy(config) as proxy, proxy.admin() as admin:

            async def probed() -> bool:
                rows = (await admin.get("/admin/scores")).json()["pairs"]
                return all(r["source_mix"]["probe"] >= 3 for r in rows)

            await wait_until(probed, timeout=10)
            rows = (await admin.get("/admin/scores")).json()["pairs"]
            assert all(r["source_mix"]["passive"] == 0 and r["is_proven"] for r in rows), rows
            assert market.stats("p")["completed"] >= 3  # real streamed requests

            response = await admin.post("/admin/probe", params={"model": "m", "provider": "p"})
            assert response.status_code == 200, response.text
            sample = response.json()["sample"]
            assert sample["source"] == "probe" and sample["outcome"] == "ok"
            assert sample["ttft_s"] > 0 and sample["provider"] == "p"
            bad = await admin.post("/admin/probe", params={"model": "m", "provider": "zzz"})
            assert bad.status_code == 400 and "known: p, q" in bad.json()["error"]["message"]
            unknown = await admin.post("/admin/probe", params={"model": "x", "provider": "p"})
            assert unknown.status_code == 404

            status = await prober_status(proxy)
            assert status["enabled"] and status["coordination"]["ok"]
            p = pair_status(status, "p")
            assert p["reason"] in ("gap", "burst") and p["next_due"] is not None
            assert p["lease_holder"] == proxy.services.replica
            assert p["last_probe"]["reason"] in ("burst", "manual", "gap")
            assert p["price_per_1m_usd"]["from"].startswith("unknown")
            assert status["budget"]["used_probes"] >= 7 and not status["budget"]["paused"]
            metrics = (await admin.get("/metrics")).text
    assert 'ttft_router_probes_total{model="m",outcome="ok",provider="p",reason="burst"}' in metrics
    assert 'reason="manual"' in metrics
    assert 'ttft_router_probe_budget_left{kind="probes"}' in metrics
    assert "ttft_router_prober_paused 0.0" in metrics


async def test_the_budget_cap_stops_probing_and_says_so(tmp_path: Path) -> None:
    policy = probe_policy(tmp_path, "interval_s: 60, burst_spacing_s: 2")
    prober = {**PROBER, "max_probes_per_hour": 4}
    async with Market(
        scenario({"p": {"m-p": FAST}, "q": {"m-q": FAST}}, time_scale=TIME_SCALE)
    ) as market:
        config = config_for(
            market, {"m": {"p": "m-p", "q": "m-q"}}, policy_file=policy, prober=prober
        )
        async with running_proxy(config) as proxy, proxy.admin() as admin:

            async def paused() -> dict[str, Any] | None:
                status = await prober_status(proxy)
                return status if status["budget"]["paused"] else None

            status = await wait_until(paused, timeout=10)
            assert "probe cap reached: 4 of 4" in status["budget"]["paused_because"]
            assert status["budget"]["used_probes"] == 4
            # Burst slots come every 20 ms here: over 0.3 s (15 of them) none is sent. A span
            # in which nothing may happen has no event to wait for, hence the sleep.
            await asyncio.sleep(0.3)
            assert requests_of(market, "p") + requests_of(market, "q") == 4
            metrics = (await admin.get("/metrics")).text
            refused = await admin.post("/admin/probe", params={"model": "m", "provider": "p"})
    assert 'ttft_router_probe_budget_left{kind="probes"} 0.0' in metrics
    assert "ttft_router_prober_paused 1.0" in metrics
    assert refused.status_code == 429 and "probe cap" in refused.json()["error"]["message"]


async def test_the_cost_cap_counts_reported_tokens_at_the_configured_price(
    tmp_path: Path,
) -> None:
    policy = probe_policy(tmp_path, "interval_s: 60, burst_spacing_s: 2", min_samples="50")
    # $0.10 per prompt token: the simulator reports 5 prompt tokens (the prompt's words), so
    # a probe costs $0.50 once settled; before it is sent ~42 tokens ($4.20) are held.
    price = {"prompt_per_1m_usd": 100_000.0, "completion_per_1m_usd": 0.0}
    prober = {**PROBER, "max_cost_per_hour_usd": 10.0, "prices": {"p": price}}
    async with Market(scenario({"p": {"m-p": FAST}}, time_scale=TIME_SCALE)) as market:
        config = config_for(market, {"m": {"p": "m-p"}}, policy_file=policy, prober=prober)
        async with running_proxy(config) as proxy:

            async def paused() -> dict[str, Any] | None:
                status = await prober_status(proxy)
                return status if status["budget"]["paused"] else None

            status = await wait_until(paused, timeout=10)
            sent = requests_of(market, "p")
    budget, row = status["budget"], pair_status(status, "p")
    assert "cost cap reached" in budget["paused_because"]
    assert budget["used_cost_usd"] == pytest.approx(0.5 * budget["used_probes"])
    assert 5.8 < budget["used_cost_usd"] <= 10.0
    assert sent == budget["used_probes"] == row["probes"]
    assert row["price_per_1m_usd"] == {"prompt": 100_000.0, "completion": 0.0, "from": "config"}


async def test_a_90_s_cold_start_is_one_slow_sample_and_blocks_no_other_pair(
    tmp_path: Path,
) -> None:
    cold = {"warm_ttft": {"median_s": 0.5, "sigma": 0.1}, "cold_chance": 1.0,
            "cold_start": {"median_s": 90.0, "sigma": 0.0}, "tokens_per_s": 2000}  # fmt: skip
    frozen = {**cold, "cold_start": {"median_s": 400.0, "sigma": 0.0}}
    # probe timeout 120 s (default): the 90 s start is a slow sample, the 400 s one censored
    policy = probe_policy(tmp_path, "interval_s: 600, burst_spacing_s: 5", min_samples="10")
    providers = {"cold": {"m-c": cold}, "warm": {"m-w": FAST}, "frozen": {"m-f": frozen}}
    async with Market(scenario(providers, time_scale=TIME_SCALE)) as market:
        config = config_for(
            market, {"m": {"cold": "m-c", "warm": "m-w", "frozen": "m-f"}},
            policy_file=policy, prober=PROBER,
        )  # fmt: skip
        async with running_proxy(config) as proxy:
            states = proxy.services.prober.states

            def first(provider: str) -> Any:
                return next(s for p, s in states.items() if p.provider == provider).last

            await wait_until(lambda: first("cold") and first("frozen"), timeout=10)
            slow, cut = first("cold"), first("frozen")
            async with proxy.admin() as admin:

                async def scored() -> list[dict[str, Any]] | None:
                    rows = (await admin.get("/admin/scores")).json()["pairs"]
                    by = {r["provider"]: r for r in rows}
                    return by if by["frozen"]["n"] >= 1 and by["cold"]["n"] >= 1 else None

                rows = await wait_until(scored, timeout=5)
    assert slow.outcome == "ok" and slow.source == "probe"
    assert 0.9 * 90 * TIME_SCALE <= slow.ttft_s < 120 * TIME_SCALE
    assert cut.outcome == "timeout" and cut.ttft_s is None
    assert cut.censored_at_s >= 120 * TIME_SCALE * 0.99  # censored at the probe timeout
    assert rows["frozen"]["n_censored"] >= 1  # kept as a latency observation, not dropped
    assert rows["cold"]["median_s"] >= 0.9 * 90 * TIME_SCALE
    # While the cold probe waited 0.9 s, the warm pair's burst went on (a probe per 50 ms).
    start, end = slow.timestamp, slow.timestamp + slow.ttft_s
    warm = [s for s in proxy.services.scoreboard.window(_pair(proxy, "warm"))
            if start < s.timestamp < end]  # fmt: skip
    assert len(warm) >= 5, warm


def _pair(proxy: Proxy, provider: str) -> Any:
    return next(p for p in proxy.services.prober.states if p.provider == provider)


KEEP_WARM_SOLO = {
    "warm_ttft": {"median_s": 0.2, "sigma": 0.1},
    "cold_start": {"median_s": 20.0, "sigma": 0.0},
    "scale_to_zero_after_s": 60.0,
    "tokens_per_s": 2000,
}


async def _keep_warm_run(tmp_path: Path, enabled: bool) -> tuple[int, dict[str, Any]]:
    """One provider that scales to zero after 60 s idle (0.6 s here); gap probes every 120 s
    (1.2 s) hit cold starts until keep-warm learns the idle-to-cold time. Returns the cold
    starts the simulator counted over the quiet period that follows, and the pair's status."""
    warm = (f"keep_warm: {{enabled: {str(enabled).lower()}, margin: 0.25, idle_to_cold_s: 300,"
            " min_idle_s: 1}")  # fmt: skip
    # Cold-start-like above 5 s (50 ms here; the cold start is 200 ms): at this scale the
    # 2 s default would be 20 ms, within reach of event-loop lag on a loaded machine.
    policy = probe_policy(tmp_path, f"interval_s: 120, burst_spacing_s: 5, {warm}", floor_s=5.0)
    async with Market(scenario({"solo": {"m-s": KEEP_WARM_SOLO}}, time_scale=TIME_SCALE)) as market:
        config = config_for(market, {"m": {"solo": "m-s"}}, policy_file=policy, prober=PROBER)
        async with running_proxy(config) as proxy:
            state = next(iter(proxy.services.prober.states.values()))

            async def learned() -> bool:
                row = pair_status(await prober_status(proxy), "solo")
                return row["keep_warm"]["idle_to_cold_s"] is not None

            await wait_until(learned, timeout=15)
            market.reset_stats()
            probes_then = state.probes
            await wait_until(lambda: state.probes >= probes_then + (12 if enabled else 4),
                             timeout=15)  # fmt: skip
            await proxy.client().chat.completions.create(model="m", messages=HI, max_tokens=2)
            return market.stats("solo")["cold_starts"], pair_status(
                await prober_status(proxy), "solo"
            )


async def test_keep_warm_on_means_no_cold_starts_in_a_quiet_period(tmp_path: Path) -> None:
    cold_starts, row = await _keep_warm_run(tmp_path, enabled=True)
    assert cold_starts == 0, row
    assert row["reason"] == "keep-warm" and row["last_probe"]["reason"] == "keep-warm"
    learned = row["keep_warm"]["idle_to_cold_s"]
    # between about the scale-down time (less the loop's lag at this scale: a probe's clock
    # starts a little before the simulator admits it) and a gap interval plus its jitter
    assert 0.5 * 60 * TIME_SCALE <= learned <= 1.2 * 120 * TIME_SCALE
    assert row["keep_warm"]["spacing_s"] < 60 * TIME_SCALE


async def test_keep_warm_off_means_cold_starts_in_the_same_quiet_period(tmp_path: Path) -> None:
    cold_starts, row = await _keep_warm_run(tmp_path, enabled=False)
    assert cold_starts >= 2, row  # gap probes 1.2 s apart find it cold (a probe in flight
    # at the reset may have been counted before it)
    assert row["reason"] == "gap"


@contextlib.asynccontextmanager
async def provider_at(sc: Scenario, port: int = 0) -> AsyncIterator[Market]:
    async with Market(sc.with_ports(dict.fromkeys(sc.providers, port))) as market:
        yield market


def one_provider(name: str, behaviour: dict[str, Any]) -> Scenario:
    return scenario({name: {f"m-{name}": behaviour}}, time_scale=TIME_SCALE)


PRONE = {"warm_ttft": {"median_s": 1.0, "sigma": 0.1}, "cold_chance": 0.3,
         "cold_start": {"median_s": 30.0, "sigma": 0.1}, "tokens_per_s": 2000}  # fmt: skip
STEADY = {"warm_ttft": {"median_s": 3.0, "sigma": 0.1}, "tokens_per_s": 2000}
QUICK = {"warm_ttft": {"median_s": 1.0, "sigma": 0.1}, "tokens_per_s": 2000}
SWIFT = {"warm_ttft": {"median_s": 0.3, "sigma": 0.1}, "tokens_per_s": 2000}


async def test_probes_alone_demote_a_pair_gone_cold_and_discover_one_gone_fast(
    tmp_path: Path,
) -> None:
    policy = probe_policy(
        tmp_path, "interval_s: 10, burst_spacing_s: 2",
        window="{max_samples: 12}", exploration_share="0",
    )  # fmt: skip
    async with (
        provider_at(one_provider("a", QUICK)) as a,
        provider_at(one_provider("b", STEADY)) as b,
    ):
        port_a = a.port("a")
        config = config_for(
            a, {"m": {"a": "m-a", "b": "m-b"}}, policy_file=policy, prober=PROBER,
            extra_providers=b.provider_configs(),
        )  # fmt: skip
        async with running_proxy(config) as proxy, proxy.admin() as admin:

            async def would_choose(provider: str) -> dict[str, Any] | None:
                explain = (await admin.get("/admin/explain", params={"model": "m"})).json()
                proven = all(c["score"]["is_proven"] for c in explain["candidates"])
                return explain if proven and explain["would_choose"] == provider else None

            await wait_until(lambda: would_choose("a"), timeout=10)  # no client traffic at all
            await a.stop()  # a turns cold-start-prone, same port
            async with provider_at(one_provider("a", PRONE), port_a) as prone:

                async def demoted() -> dict[str, Any] | None:
                    explain = await would_choose("b")
                    if explain is None:
                        return None
                    rows = {c["provider"]: c["score"] for c in explain["candidates"]}
                    # a's p95 among its cold starts (only they reach 10 s, 0.1 s here)
                    return rows if rows["a"]["p95_s"] > 10 * TIME_SCALE else None

                rows = await wait_until(demoted, timeout=15)
                assert rows["a"]["source_mix"]["passive"] == 0  # probes alone
                assert requests_of(prone, "a") > 0
                # Traffic goes to b now; a gets none, only probes.
                client = proxy.client()
                for _ in range(10):
                    r = await client.chat.completions.with_raw_response.create(
                        model="m", messages=HI, max_tokens=2
                    )
                    assert r.headers["x-ttft-router-provider"] == "b"
            async with provider_at(one_provider("a", SWIFT), port_a) as swift:
                served: list[str] = []

                async def moved() -> bool:
                    r = await client.chat.completions.with_raw_response.create(
                        model="m", messages=HI, max_tokens=2
                    )
                    served.append(r.headers["x-ttft-router-provider"])
                    return served[-3:] == ["a", "a", "a"]

                await wait_until(moved, timeout=15, interval=0.01)
                first_a = served.index("a")
                assert set(served[:first_a]) == {"b"}
                assert requests_of(swift, "a") > 3  # probes found it before traffic moved


async def test_a_clearly_worse_pairs_burst_ends_early_and_the_leaders_runs_on(
    tmp_path: Path,
) -> None:
    """No client traffic; min_samples 20, burst_min 5: fast (0.3 s) and slow (3 s) burst
    alike until slow has 5 samples, each best in under 5% of the posterior draws; then
    slow's burst ends (a gap probe per interval after that) while fast's runs on to 20.
    Time scale 0.05, so the machine's own jitter (ms) cannot blur 15 ms against 150 ms."""
    scale = 0.05
    policy = policy_file(
        tmp_path,
        f"defaults: {{min_samples: 20, cold_start: {{floor_s: {2.0 * scale}}}, "
        "probe: {interval_s: 600, burst_spacing_s: 3, burst_min: 5}}\n",
    )
    slow = {"warm_ttft": {"median_s": 3.0, "sigma": 0.05}, "tokens_per_s": 2000}
    async with Market(
        scenario({"fast": {"m-f": SWIFT}, "slow": {"m-s": slow}}, time_scale=scale)
    ) as market:
        config = config_for(
            market, {"m": {"fast": "m-f", "slow": "m-s"}}, policy_file=policy,
            prober={"enabled": True, "time_scale": scale},
        )  # fmt: skip
        async with running_proxy(config) as proxy, proxy.admin() as admin:

            async def leader_proven() -> dict[str, Any] | None:
                rows = (await admin.get("/admin/scores")).json()["pairs"]
                by = {r["provider"]: r for r in rows}
                return by if "fast" in by and by["fast"]["n"] >= 20 else None

            rows = await wait_until(leader_proven, timeout=30)
            assert 5 <= rows["slow"]["n"] < 15, rows["slow"]["n"]  # ~5, not 20
            assert pair_status(await prober_status(proxy), "slow")["reason"] != "burst"
            assert requests_of(market, "slow") < 15 <= requests_of(market, "fast")
