"""The in-process client limiter (learning.store.client_windows) on a fake clock: a sliding
minute that serves exactly the limit per minute whatever the offered rate, refusals that
count nothing, Retry-After that is exactly right, tokens corrected by the answer, slots that
free themselves, budgets per UTC period, charges counted once."""

from __future__ import annotations

import itertools

import pytest

from proxy.learning.store.base import ClientAsk, ClientCharge, ClientLimits
from proxy.learning.store.client_windows import ClientWindows

_ids = itertools.count()
DAY, MONTH = "20250131", "202501"


def ask(tokens: int = 10, day: str = DAY, month: str = MONTH) -> ClientAsk:
    return ClientAsk("app", f"r{next(_ids)}", tokens, day, month)


def charge(of: ClientAsk, tokens: int, usd: float = 0.0) -> ClientCharge:
    return ClientCharge("app", of.request_id, tokens, usd, of.day, of.month)


@pytest.mark.parametrize("offered_per_s", [3, 100, 300])
def test_a_sliding_minute_serves_the_limit_per_minute_whatever_the_offered_rate(
    offered_per_s: int,
) -> None:
    windows, limits = ClientWindows(), ClientLimits(requests=120)
    served = [0, 0, 0]
    for i in range(180 * offered_per_s):  # three minutes at a steady rate
        now = 1000.0 + i / offered_per_s
        if windows.admit(ask(), limits, now).granted:
            served[int((now - 1000.0) // 60)] += 1
    expected = min(120, 60 * offered_per_s)
    assert served == [expected] * 3


def test_a_refusal_counts_nothing_and_its_retry_after_is_exact() -> None:
    windows, limits = ClientWindows(), ClientLimits(requests=2)
    assert windows.admit(ask(), limits, 100.0).granted
    assert windows.admit(ask(), limits, 130.0).granted
    for t in (131.0, 140.0, 150.0):  # refused many times: still two in the window
        refused = windows.admit(ask(), limits, t)
        assert refused.refusal == "requests" and refused.requests == 2
        assert refused.retry_after_s == pytest.approx(160.0 - t)
        assert refused.reset_s == pytest.approx(190.0 - t)  # until the window is empty
    assert windows.admit(ask(), limits, 159.999).refusal == "requests"
    assert windows.admit(ask(), limits, 160.0).granted


def test_tokens_count_the_estimate_until_the_answer_replaces_it() -> None:
    windows, limits = ClientWindows(), ClientLimits(tokens=1000)
    first = ask(600)
    assert windows.admit(first, limits, 0.0).granted
    refused = windows.admit(ask(500), limits, 1.0)
    assert refused.refusal == "tokens" and refused.retry_after_s == pytest.approx(59.0)
    windows.charge(charge(first, 120), 2.0)  # the answer used 120
    use = windows.admit(ask(500), limits, 3.0)
    assert use.granted and use.tokens == 620
    assert windows.admit(ask(1001), limits, 4.0).refusal == "too_large"
    late = ask(100)
    assert windows.admit(late, limits, 5.0).granted
    windows.charge(charge(late, 90), 70.0)  # over after the window: only the day counts it
    use = windows.use("app", limits, DAY, MONTH, 70.0)
    assert (use.tokens, use.tokens_day) == (0, 210)


def test_slots_free_with_the_charge_or_after_hold_s() -> None:
    windows, limits = ClientWindows(), ClientLimits(concurrent=1, hold_s=30.0)
    running = ask()
    assert windows.admit(running, limits, 0.0).granted
    assert windows.admit(ask(), limits, 1.0).refusal == "concurrent"
    windows.charge(charge(running, 5), 2.0)
    lost = ask()
    assert windows.admit(lost, limits, 3.0).granted  # never charged: its replica died
    assert windows.admit(ask(), limits, 32.9).refusal == "concurrent"
    assert windows.admit(ask(), limits, 33.0).granted


def test_budgets_per_utc_day_and_month_and_charges_counted_once() -> None:
    windows = ClientWindows()
    limits = ClientLimits(usd_per_day=1.0, usd_per_month=1.5)
    first = ask()
    assert windows.admit(first, limits, 0.0).granted
    windows.charge(charge(first, 10, 0.6), 1.0)
    windows.charge(charge(first, 10, 0.6), 2.0)  # the same request again: counted once
    second = ask()
    assert windows.admit(second, limits, 3.0).granted  # 0.6 < 1.0: admitted
    windows.charge(charge(second, 10, 0.5), 4.0)
    day = windows.admit(ask(), limits, 5.0)
    assert day.refusal == "day" and day.usd_day == pytest.approx(1.1)
    tomorrow = ask(day="20250201", month="202502")
    assert windows.admit(tomorrow, limits, 90000.0).granted  # a new day and a new month
    windows.charge(charge(second, 10, 0.5), 90001.0)  # late, of a day that is over: ignored
    use = windows.use("app", limits, "20250201", "202502", 90002.0)
    assert (use.usd_day, use.usd_month, use.refused_day) == (0.0, 0.0, 0)
    month_only = ClientWindows()  # 0.8 today and 0.8 yesterday: the month's 1.5 is spent
    for t, a in ((0.0, ask(day="20250130")), (1.0, ask())):
        month_only.charge(charge(a, 1, 0.8), t)
    month = month_only.admit(ask(), limits, 2.0)
    assert month.refusal == "month" and month.usd_day == pytest.approx(0.8)
    assert month.usd_month == pytest.approx(1.6)
