"""Helpers for the simulator tests: small scenarios built in Python (the deadline wait is
`tests.helpers.wait_until`)."""

from __future__ import annotations

from typing import Any

from proxy.simulator import Scenario


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
