"""Routing at the request's own prompt size, end to end through the openai SDK: on a
market where one provider answers short prompts first and the other long ones (opposite
prefill rates), a short prompt and a long prompt go to different providers, and explain says
why at the size asked. The pairs' history is written into the store (what their traffic
would have left: both sizes on both pairs), so the choice is the estimates', not a draw's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from proxy.core.domain import Outcome, Sample
from proxy.simulator import Market
from tests.e2e.conftest import Proxy, config_for, policy_file, running_proxy, scenario
from tests.helpers import wait_until

QUICK = {"warm_ttft": {"median_s": 0.01, "sigma": 0.1}, "prefill_tokens_per_s": 400_000}
BULK = {"warm_ttft": {"median_s": 0.03, "sigma": 0.1}, "prefill_tokens_per_s": 4_000_000}
POLICY = "defaults: {exploration_share: 0.0, probed_exploration_share: 0.0}\n"


def history(now: float) -> list[Sample]:
    """quick: 0.01 s + 1 s per 400k tokens; bulk: 0.03 s + 1 s per 4M tokens (as the market
    serves them), 40 short and 40 long prompts each."""
    out = []
    for i in range(80):
        tokens = 100 if i % 2 else 12_000
        ts = now - 200 + 2 * i
        out.append(
            Sample("m", "quick", Outcome.OK, 0.01 + tokens / 400_000, ts, prompt_tokens=tokens)
        )
        out.append(Sample("m", "bulk", Outcome.OK, 0.03 + tokens / 4_000_000, ts + 1,
                          prompt_tokens=tokens))  # fmt: skip
    return out


async def teach(proxy: Proxy) -> None:
    await proxy.services.store.append(history(time.time()), [])

    async def scored() -> bool:
        snapshot = proxy.services.scoreboard.snapshot
        return len(snapshot) == 2 and all(s.sized for s in snapshot.values())

    await wait_until(scored, timeout=5)


def prompt(words: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": " ".join(f"w{i % 100:02d}" for i in range(words))}]


async def test_short_and_long_prompts_go_to_the_provider_that_serves_their_size_first(
    tmp_path: Path,
) -> None:
    market = Market(scenario({"quick": {"m-q": QUICK}, "bulk": {"m-b": BULK}}))
    async with market:
        config = config_for(market, {"m": {"quick": "m-q", "bulk": "m-b"}},
                            policy_file=policy_file(tmp_path, POLICY))  # fmt: skip
        async with running_proxy(config) as proxy:
            await teach(proxy)
            # asked before any live request: the history alone decides (a live sample's
            # TTFT depends on how loaded the machine is)
            async with proxy.admin() as admin:
                explained = (
                    await admin.get("/admin/explain", params={"model": "m", "prompt_tokens": 12000})
                ).json()
                scores = (await admin.get("/admin/scores")).json()["pairs"]
            client = proxy.client()
            short = await client.chat.completions.with_raw_response.create(
                model="m", messages=prompt(20), max_tokens=2
            )
            long = await client.chat.completions.with_raw_response.create(
                model="m", messages=prompt(12_000), max_tokens=2
            )
    assert short.headers["x-ttft-router-provider"] == "quick"
    assert long.headers["x-ttft-router-provider"] == "bulk"
    assert explained["would_choose"] == "bulk" and explained["prompt_tokens"] == 12000
    assert explained["reason"].startswith("for 12k prompt tokens: bulk has the lowest estimated")
    rates = {p["provider"]: p["prefill"] for p in scores}
    assert rates["quick"]["identified"] and rates["bulk"]["identified"]
    assert rates["bulk"]["tokens_per_s"] > 5 * rates["quick"]["tokens_per_s"]
