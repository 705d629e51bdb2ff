"""Cold-aware failover: when the primary fails and the next candidate is probably cold
(its cold model: idle past its learned scale-down time), the failover races it with the
candidate after it, so the request waits for the first answer rather than for one cold
start. Real scripted providers; the cold one answers only after a long delay, like a cold
start, and is closed when the race is won elsewhere."""

from __future__ import annotations

import time
from pathlib import Path

from proxy.core.domain import Outcome, Sample
from tests.e2e.conftest import Proxy, running_proxy, scripted_config
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

POLICY = "defaults:\n  exploration_share: 0.0\n  probed_exploration_share: 0.0\n"
HI = [{"role": "user", "content": "hi"}]


def history(now: float) -> list[Sample]:
    """p0 fast; p1 fast when warm but cold (25 s) after every idle of 90 s or more, and
    idle for 10 minutes now; p2 slow, with a worse tail (30 s in a fifth): ranked p0, p1, p2."""
    out = [Sample("m", "p0", Outcome.OK, 0.05, now - 100 + i, total_s=0.1) for i in range(60)]
    t = now - 3000.0
    for i in range(24):
        cold = i % 4 == 0
        out.append(Sample("m", "p1", Outcome.OK, 25.0 if cold else 0.08, t, total_s=0.2))
        t += 120.0 if i % 4 == 3 else 5.0  # an idle of 120 s before every fourth
    out += [
        Sample("m", "p2", Outcome.OK, 30.0 if i % 5 == 0 else 0.3, now - 100 + i, total_s=0.4)
        for i in range(40)
    ]
    return out


async def teach(proxy: Proxy) -> None:
    await proxy.services.store.append(history(time.time()), [])

    async def scored() -> bool:
        snapshot = proxy.services.scoreboard.snapshot
        return len(snapshot) == 3 and all(s.belief is not None for s in snapshot.values())

    await wait_until(scored, timeout=5)


async def test_a_failover_to_a_probably_cold_pair_races_it_with_the_next(
    tmp_path: Path,
) -> None:
    async with (
        scripted_provider() as primary,
        scripted_provider() as cold,
        scripted_provider() as warm,
    ):
        cold.delay_s = 60.0  # a cold start: the client must not wait for it
        async with running_proxy(scripted_config(tmp_path, POLICY, primary, cold, warm)) as proxy:
            await teach(proxy)
            async with proxy.admin() as admin:
                explained = (await admin.get("/admin/explain", params={"model": "m"})).json()
            assert explained["order"] == ["p0", "p1", "p2"], explained["reason"]
            client = proxy.client()
            for _ in range(10):  # races share the hedge budget: 10% of the requests
                await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
            primary.mode = "500"  # the outage
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=HI, max_tokens=2
            )
            decision = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
            # the decision first: a failure says what happened instead of only timing out
            assert raw.headers["x-ttft-router-provider"] == "p2", decision
            attempts = {a["provider"]: a for a in decision["attempts"]}
            assert attempts["p0"]["outcome"] == "http_5xx", decision
            assert attempts["p1"]["outcome"] == "cancelled", decision
            assert attempts["p2"]["outcome"] == "ok", decision
            await wait_until(lambda: cold.aborted == 1, timeout=30)  # once failed at 10 s
    hedge = decision["hedge"]
    assert hedge["trigger"] == "cold" and hedge["fired"] and hedge["winner"] == "p2"
    assert hedge["basis"].startswith("failover to p1 idle") and "likely cold" in hedge["basis"]
    assert len(primary.requests) == 11 and len(cold.requests) == len(warm.requests) == 1


async def test_without_the_race_the_failover_goes_to_the_next_candidate_alone(
    tmp_path: Path,
) -> None:
    policy = POLICY + "  failover: {race_cold: false}\n"
    async with (
        scripted_provider("500") as primary,
        scripted_provider("500") as cold,
        scripted_provider() as warm,
        running_proxy(scripted_config(tmp_path, policy, primary, cold, warm)) as proxy,
    ):
        await teach(proxy)
        raw = await proxy.client().chat.completions.with_raw_response.create(
            model="m", messages=HI, max_tokens=2
        )
        decision = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
    assert [a["provider"] for a in decision["attempts"]] == ["p0", "p1", "p2"]
    assert decision["hedge"] is None  # in turn: each started after the one before failed
