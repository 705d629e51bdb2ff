"""Hedging as a client sees it: a primary with no first token after the hedge delay gets a
second provider beside it; the first to produce output serves one clean answer, the other
is aborted upstream and recorded as censored; a budget caps hedges under a burst."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.core.domain import Outcome, Sample
from tests.e2e.conftest import running_proxy, scripted_config
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

HI = [{"role": "user", "content": "hi"}]
POLICY = """
defaults:
  min_samples: 3
  exploration_share: 0
  hedge: {enabled: true, delay_s: 0.2, budget_share: %s, budget_window_s: 60}
"""


@pytest.mark.parametrize("stream", [True, False])
async def test_a_slow_primary_is_hedged_and_aborted_upstream(tmp_path: Path, stream: bool) -> None:
    async with (
        scripted_provider() as fast,
        scripted_provider() as backup,
        running_proxy(scripted_config(tmp_path, POLICY % 1.0, fast, backup)) as proxy,
    ):
        backup.delay_s = 0.05
        await proxy.prefer("p0", "p1")
        fast.delay_s = 30.0  # the chosen provider goes slow
        began = time.perf_counter()
        create = proxy.client().chat.completions.with_raw_response.create
        if stream:
            response = await create(model="m", messages=HI, stream=True)
            parts = [c.choices[0].delta.content or "" async for c in response.parse() if c.choices]
            text = "".join(parts)
        else:
            response = await create(model="m", messages=HI)
            text = response.parse().choices[0].message.content or ""
        took = time.perf_counter() - began
        assert text == "hello world" and response.headers["x-ttft-router-provider"] == "p1"
        assert took < 5.0  # the hedge after 0.2 s, not the primary's 30 s
        await wait_until(lambda: fast.aborted == 1, timeout=5)

        decision = await proxy.decision(response.headers["x-ttft-router-decision-id"])
        hedge = decision["hedge"]
        assert hedge["fired"] and hedge["primary"] == "p0" and hedge["winner"] == "p1"
        assert hedge["after_s"] == 0.2 and hedge["basis"] == "fixed 0.2 s"
        assert hedge["loser_censored_at_s"] >= 0.2
        primary, second = decision["attempts"]
        assert (primary["provider"], primary["outcome"], primary["hedge"]) == (
            "p0",
            "cancelled",
            False,
        )
        assert (second["provider"], second["outcome"], second["hedge"]) == ("p1", "ok", True)
        assert second["started_s"] >= 0.2 and decision["winner"] == "p1"

        async def censored() -> bool:
            async with proxy.admin() as admin:
                pairs = (await admin.get("/admin/scores", params={"model": "m"})).json()["pairs"]
            return any(p["provider"] == "p0" and p["n_censored"] == 1 for p in pairs)

        await wait_until(censored, timeout=5)


async def test_the_budget_caps_hedges_under_a_burst(tmp_path: Path) -> None:
    async with (
        scripted_provider() as slow,
        scripted_provider() as backup,
        running_proxy(scripted_config(tmp_path, POLICY % 0.2, slow, backup)) as proxy,
    ):
        backup.delay_s = 0.05
        await proxy.prefer("p0", "p1")
        slow.delay_s = 0.6
        client = proxy.client()

        async def one() -> str:
            r = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
            return r.headers["x-ttft-router-decision-id"]

        ids = await asyncio.gather(*(one() for _ in range(20)))
        decisions = [await proxy.decision(i) for i in ids]
        fired = [d for d in decisions if d["hedge"]["fired"]]
        skipped = [d for d in decisions if d["hedge"]["skipped"]]
        assert 1 <= len(fired) <= 0.2 * 20  # the burst is all the window holds
        assert len(fired) + len(skipped) == 20
        assert all("hedge budget spent" in d["hedge"]["skipped"] for d in skipped)

        families = {
            f.name: f for f in text_string_to_metric_families(
                (await (proxy.admin()).get("/metrics")).text
            )
        }  # fmt: skip
        hedges = {s.labels["result"]: s.value for s in families["ttft_router_hedges"].samples
                  if s.name.endswith("_total")}  # fmt: skip
        assert hedges["fired"] == len(fired) and hedges["skipped"] == len(skipped)
        assert "ttft_router_hedge_budget_left" in families


async def test_hedging_off_by_default_waits_for_the_primary(tmp_path: Path) -> None:
    policy = "defaults: {min_samples: 3, exploration_share: 0}\n"
    async with (
        scripted_provider() as slow,
        scripted_provider() as backup,
        running_proxy(scripted_config(tmp_path, policy, slow, backup)) as proxy,
    ):
        backup.delay_s = 0.05
        await proxy.prefer("p0", "p1")
        slow.delay_s = 0.4
        r = await proxy.client().chat.completions.with_raw_response.create(model="m", messages=HI)
        assert r.headers["x-ttft-router-provider"] == "p0"
        decision = await proxy.decision(r.headers["x-ttft-router-decision-id"])
        assert decision["hedge"] is None and len(decision["attempts"]) == 1
        assert isinstance(r.parse(), openai.types.chat.ChatCompletion)


COLD_POLICY = """
defaults:
  objective: p50
  min_samples: 3
  exploration_share: 0
  cold_start: {floor_s: 1.0}
  hedge: {enabled: true, delay_s: 5, budget_share: 1.0, cold_chance: 0.5}
"""


async def test_a_probably_cold_primary_is_hedged_at_once(tmp_path: Path) -> None:
    """p0 is fast when warm but has been cold after every idle longer than ~50 s, and has
    been idle for 240 s: the hedge goes at once (not after the 5 s delay) and the decision
    says why, with its kind, both attempts, the winner and the estimated saving."""
    async with (
        scripted_provider() as fast,
        scripted_provider() as backup,
        running_proxy(scripted_config(tmp_path, COLD_POLICY, fast, backup)) as proxy,
    ):
        gaps = (5, 80, 6, 90, 4, 100, 7, 70, 5, 3)  # p0: cold (12 s) after an idle > 50 s
        ttfts = [12.0 if gap > 50 else 0.01 for gap in gaps]
        now = time.time()
        t = now - 240.0 - sum(gaps) - sum(ttfts)  # its last request ended 240 s ago
        for gap, ttft in zip(gaps, ttfts, strict=True):
            t += gap
            proxy.services.buffer.add_sample(Sample("m", "p0", Outcome.OK, ttft, t, total_s=ttft))
            t += ttft
        for i in range(10):
            proxy.services.buffer.add_sample(
                Sample("m", "p1", Outcome.OK, 0.05, now - 20 + i, total_s=0.05)
            )

        async def explained() -> dict[str, Any] | None:
            async with proxy.admin() as admin:
                view = (await admin.get("/admin/scores", params={"model": "m"})).json()
            p0 = next((p for p in view["pairs"] if p["provider"] == "p0"), None)
            return p0 if p0 is not None and p0["cold"] is not None else None

        p0 = await wait_until(explained, timeout=5)
        assert p0["cold"]["chance_now"] >= 0.5 and 50 < p0["cold"]["idle_to_cold_s"] <= 70

        fast.delay_s = 3.0  # the cold start, as the client would meet it
        backup.delay_s = 0.05
        began = time.perf_counter()
        r = await proxy.client().chat.completions.with_raw_response.create(model="m", messages=HI)
        took = time.perf_counter() - began
        assert r.headers["x-ttft-router-provider"] == "p1" and took < 2.0
        await wait_until(lambda: fast.aborted == 1, timeout=5)

        decision = await proxy.decision(r.headers["x-ttft-router-decision-id"])
        hedge = decision["hedge"]
        assert hedge["trigger"] == "cold" and hedge["fired"] and hedge["after_s"] == 0.0
        assert hedge["basis"].startswith("p0 idle ") and "likely cold" in hedge["basis"]
        assert hedge["winner"] == "p1" and hedge["winner_ttft_s"] < 2.0
        assert hedge["saved_s"] == pytest.approx(12.0 - hedge["winner_ttft_s"], abs=0.01)
        assert decision["verdict"] == "hedged"
        primary, second = decision["attempts"]
        assert (primary["provider"], primary["outcome"]) == ("p0", "cancelled")
        assert second["hedge"] and second["started_s"] < 0.5
        families = {
            f.name: f for f in text_string_to_metric_families(
                (await (proxy.admin()).get("/metrics")).text
            )
        }  # fmt: skip
        assert families["ttft_router_cold_hedges"].samples[0].value == 1
        saved = families["ttft_router_hedge_saved_seconds"].samples[0].value
        assert saved == pytest.approx(hedge["saved_s"], abs=1e-6)
