"""Coarse timers and Deadline: fire no earlier than asked, soon after; cancel; asyncio's
timeout contract (TimeoutError for our own deadline, an outside cancel goes on)."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.timers import CoarseTimers, Deadline
from tests.helpers import wait_until


async def test_fires_no_earlier_than_asked_and_soon_after() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    fired: list[float] = []
    start = time.monotonic()
    timers.call_later(0.05, lambda: fired.append(time.monotonic() - start))
    await wait_until(lambda: fired, timeout=2.0, interval=0.005)
    assert 0.05 <= fired[0] < 1.0
    await wait_until(lambda: timers._task is None, timeout=2.0)  # no task while idle


async def test_cancelled_timer_never_fires_and_others_still_do() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    fired: list[str] = []
    timers.call_later(0.03, fired.append, "cancelled").cancel()
    timers.call_later(0.06, fired.append, "kept")
    await wait_until(lambda: fired, timeout=2.0, interval=0.005)
    await wait_until(lambda: timers._task is None, timeout=2.0)
    assert fired == ["kept"]
    assert not timers._buckets


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    fired: list[int] = []
    timers.call_later(0.0, lambda: 1 / 0)
    timers.call_later(0.0, fired.append, 1)
    await wait_until(lambda: fired, timeout=2.0, interval=0.005)


async def test_deadline_ends_a_hung_await_in_timeout_error() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    start = time.monotonic()
    with pytest.raises(TimeoutError), Deadline(timers, 0.05):
        await asyncio.Event().wait()
    assert 0.05 <= time.monotonic() - start < 1.0
    await asyncio.sleep(0)  # the task is not left with a pending cancellation
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_deadline_met_leaves_nothing_behind() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    with Deadline(timers, 5.0) as deadline:
        await asyncio.sleep(0.01)
    assert not deadline.expired
    assert not timers._buckets


async def test_an_outside_cancel_is_not_turned_into_a_timeout() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    entered = asyncio.Event()

    async def waits() -> None:
        with Deadline(timers, 5.0):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_close_stops_the_task_and_drops_armed_timers() -> None:
    timers = CoarseTimers(resolution_s=0.01)
    fired: list[int] = []
    timers.call_later(0.05, fired.append, 1)
    await timers.close()
    assert timers._task is None
    await asyncio.sleep(0.1)
    assert fired == []
