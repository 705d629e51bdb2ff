"""Deadline keeps asyncio.timeout's contract: TimeoutError for its own deadline, nothing left
behind when met, and an outside cancel goes on as a cancel."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.core.timers import Deadline


async def test_deadline_ends_a_hung_await_in_timeout_error() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError), Deadline(0.05):
        await asyncio.Event().wait()
    assert 0.05 <= time.monotonic() - start < 1.0
    await asyncio.sleep(0)  # the task is not left with a pending cancellation
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_deadline_met_leaves_the_task_alone() -> None:
    with Deadline(0.05) as deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # past the deadline: the disarmed timer must not cancel us
    assert not deadline.expired
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_an_outside_cancel_is_not_turned_into_a_timeout() -> None:
    entered = asyncio.Event()

    async def waits() -> None:
        with Deadline(5.0):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
