"""Helpers for the simulator tests: a deadline wait and small scenarios built in Python."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from proxy.simulator import Scenario


async def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float = 5.0, interval_s: float = 0.005
) -> None:
    """Return once ``predicate()`` holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def scenario_of(
    models: dict[str, dict[str, Any]], *, time_scale: float = 0.01, seed: int = 3
) -> Scenario:
    """A market of one provider ``sim-a`` (key ``key-a``) serving ``models``."""
    return Scenario.model_validate(
        {
            "time_scale": time_scale,
            "seed": seed,
            "providers": {"sim-a": {"api_key": "key-a", "models": models}},
        }
    )
