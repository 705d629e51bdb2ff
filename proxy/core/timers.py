"""Deadline: `asyncio.timeout()`'s contract for the first-token deadline, at less cost.

Every attempt arms a first-token deadline that almost never fires. `asyncio.timeout()` is a
pure-Python state machine around a loop timer: ~4-5 us to arm and leave unexpired under
uvloop (Python 3.11), where one `loop.call_later` + cancel is ~0.8 us. Deadline keeps only
what dispatch needs of it, ~1.7 us (benchmarks/micro.py prints all three).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """`with Deadline(delay):` -- when `delay` seconds pass while the task is suspended
    inside the block, the task is cancelled and the block ends in TimeoutError, unless
    someone else cancelled the task too (then the CancelledError goes on), exactly as
    asyncio.timeout decides it."""

    __slots__ = ("_cancelling", "_handle", "_task", "expired")

    def __init__(self, delay: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
