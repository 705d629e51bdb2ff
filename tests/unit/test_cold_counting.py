"""Cold starts as the router counts them, request by request: synthetic TTFTs from the
simulator's own engine (tests/inprocess.py) through the real store and scoreboard, on a
synthetic clock. The score's cold-start share counts exactly the requests the engine served
cold, whether they come by chance or after idling, and the pair's cold model learns the
scale-down time from the idles. (Replaces end-to-end assertions that compared these counts
over real sockets at a 50x time scale, where a warm answer a loaded machine delayed past
the threshold counted as cold.)"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.core.domain import Pair
from proxy.settings.policy import ModelPolicy
from tests.inprocess import MODEL, Loop

# a cold-start floor of 10 s: a warm answer (0.5 s median) is never above it, a 30 s cold
# start always is
POLICY = ModelPolicy.model_validate({"cold_start": {"floor_s": 10.0}})


async def scored(loop: Loop) -> dict[str, Any]:
    await loop.board.refresh()
    score = loop.board.snapshot[Pair(MODEL, "p")]
    return score.to_dict(loop.clock.now)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_cold_share_counts_exactly_the_cold_starts_served(seed: int) -> None:
    behaviour = {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.2},
        "cold_start": {"median_s": 30.0, "sigma": 0.2},
        "cold_chance": 0.2,
    }
    loop = Loop({"p": behaviour}, POLICY, seed)
    await loop.run(60, 2.0)
    served = loop.engines["p"].counters.cold_starts
    assert 3 <= served <= 30  # the market did send cold starts
    score = await scored(loop)
    assert score["n"] == 60 and round(score["cold_share"] * 60) == served
    cold = [s for s in loop.served if s.ttft_s > 10.0]
    assert len(cold) == served  # request by request: each cold start, and only those


async def test_idle_cold_starts_are_counted_and_their_scale_down_learned() -> None:
    """A provider that scales to zero after 120 s idle: every request after a 200 s pause
    is a cold start, every request 5 s after the last one's first token is warm."""
    behaviour = {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.2},
        "cold_start": {"median_s": 30.0, "sigma": 0.1},
        "scale_to_zero_after_s": 120,
    }
    loop = Loop({"p": behaviour}, POLICY, 4)
    for i in range(18):
        # one after the other; idle past the scale-down before every sixth: cold
        await loop.request(200.0 if i % 6 == 5 else 5.0, after_end=True)
    cold = [i for i, s in enumerate(loop.served) if s.ttft_s > 10.0]
    assert cold == [5, 11, 17] == [i for i in range(18) if i % 6 == 5]
    assert loop.engines["p"].counters.cold_starts == 3
    score = await scored(loop)
    assert round(score["cold_share"] * score["n"]) == 3
    model = score["cold"]
    assert model["idle_to_cold_s"] is not None and 5.0 < model["idle_to_cold_s"] <= 200.0
    assert model["after_idle"] == pytest.approx(4 / 5, abs=1e-3)  # three cold idles seen
    assert model["by_chance"] == 0.0
