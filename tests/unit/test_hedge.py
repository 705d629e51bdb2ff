"""The hedge decision and its budget, apart from dispatch."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.core.domain import Pair, empty_score
from proxy.serving.hedge import HedgeBudget, HedgeBudgets, SlidingCount, hedge_delay
from proxy.settings.policy import Hedge

SCORE = replace(empty_score(Pair("m", "a")), median=0.2, p90=0.8, p95=1.5, p99=9.0)


def test_delay_is_the_quantile_clamped_or_fixed() -> None:
    assert hedge_delay(Hedge(), SCORE).seconds == 0.8
    assert "p90 of a" in hedge_delay(Hedge(), SCORE).basis
    assert hedge_delay(Hedge(quantile="p99", max_delay_s=3), SCORE).seconds == 3
    assert "clamped" in hedge_delay(Hedge(quantile="p99", max_delay_s=3), SCORE).basis
    assert hedge_delay(Hedge(quantile="median", min_delay_s=0.5), SCORE).seconds == 0.5
    assert hedge_delay(Hedge(delay_s=0.25), SCORE).seconds == 0.25
    unmeasured = hedge_delay(Hedge(max_delay_s=4), empty_score(Pair("m", "b")))
    assert unmeasured.seconds == 4 and "unknown" in unmeasured.basis


def test_policy_rejects_an_empty_delay_range() -> None:
    with pytest.raises(ValueError, match="min_delay_s"):
        Hedge(min_delay_s=5, max_delay_s=1)


def test_sliding_count_forgets_after_its_window() -> None:
    count = SlidingCount(window_s=12, buckets=12)
    for t in range(12):
        count.add(100.0 + t)
    assert count.total(111.5) == 12
    assert count.total(115.5) == 8  # 100-103 have left the window
    assert count.total(200.0) == 0


def test_budget_never_exceeds_its_share_of_requests() -> None:
    budget = HedgeBudget(share=0.1, window_s=60)
    fired = 0
    for i in range(1000):  # a burst: every request wants a hedge
        now = 1000 + i * 0.01
        budget.note_request(now)
        fired += budget.try_spend(now)
    assert fired == 100
    assert budget.left(1010) == pytest.approx(0.0)
    assert not budget.try_spend(1010)
    assert budget.left(2000) == 0.0  # no requests in the window, no hedges either


def test_zero_share_never_hedges_and_budgets_follow_the_policy() -> None:
    budgets = HedgeBudgets()
    off = budgets.for_model("m", Hedge(budget_share=0.0))
    off.note_request(1.0)
    assert not off.try_spend(1.0)
    assert budgets.for_model("m", Hedge(budget_share=0.0)) is off
    on = budgets.for_model("m", Hedge(budget_share=1.0))
    assert on is not off and on.share == 1.0
    assert budgets.left(1.0) == {"m": 0.0}
