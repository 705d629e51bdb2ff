"""The state of one simulated provider: an engine per model, answer ids, counters.

Owns the per-provider objects behind an application and the ``/stats`` snapshot shape.
No HTTP here: ``server`` routes requests to this state, ``Market`` reads it in-process.
"""

from __future__ import annotations

import zlib
from typing import TypedDict

from proxy.simulator.engine import Counters, Fault, ModelEngine, derive_rng
from proxy.simulator.scenario import ProviderScenario

ErrorCounts = TypedDict("ErrorCounts", {"500": int, "429": int, "hang": int, "drop": int})


class ModelStats(TypedDict):
    """Counters of one model, as ``/stats`` shows them."""

    requests: int
    cold_starts: int
    aborted: int
    completed: int
    errors: ErrorCounts
    in_flight: int


class ProviderStats(ModelStats):
    """Counters of a provider (sums over its models) and of each of its models."""

    provider: str
    models: dict[str, ModelStats]


class SimulatedProvider:
    """One provider of a scenario; each model gets an engine with its own derived RNG."""

    def __init__(self, name: str, scenario: ProviderScenario, time_scale: float, seed: int) -> None:
        self.name = name
        self.scenario = scenario
        self.engines = {
            model: ModelEngine(behaviour, derive_rng(seed, name, model), time_scale)
            for model, behaviour in scenario.models.items()
        }
        self.system_fingerprint = f"fp_{zlib.crc32(name.encode()):08x}"
        self._answers = 0

    def next_id(self, prefix: str) -> str:
        """A fresh answer id naming this provider, e.g. ``chatcmpl-provider-a-3``."""
        self._answers += 1
        return f"{prefix}-{self.name}-{self._answers}"

    def stats(self) -> ProviderStats:
        """A snapshot of every counter."""
        total = Counters()
        models: dict[str, ModelStats] = {}
        for model, engine in self.engines.items():
            total.add(engine.counters)
            models[model] = _model_stats(engine.counters, engine.in_flight)
        in_flight = sum(engine.in_flight for engine in self.engines.values())
        return {"provider": self.name, **_model_stats(total, in_flight), "models": models}

    def reset_stats(self) -> None:
        """Zero every counter (requests in flight stay in flight)."""
        for engine in self.engines.values():
            engine.reset_counters()


def _model_stats(counters: Counters, in_flight: int) -> ModelStats:
    errors: ErrorCounts = {
        "500": counters.errors[Fault.ERROR_500.value],
        "429": counters.errors[Fault.ERROR_429.value],
        "hang": counters.errors[Fault.HANG.value],
        "drop": counters.errors[Fault.DROP.value],
    }
    return {
        "requests": counters.requests,
        "cold_starts": counters.cold_starts,
        "aborted": counters.aborted,
        "completed": counters.completed,
        "errors": errors,
        "in_flight": in_flight,
    }
