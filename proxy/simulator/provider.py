"""The state of one simulated provider: an engine per model, answer ids, counters.

Owns the per-provider objects behind an application and the ``/stats`` snapshot shape.
No HTTP here: ``server`` routes requests to this state, ``Market`` reads it in-process.
"""

from __future__ import annotations

import zlib
from typing import TypedDict

from proxy.simulator.engine import Counters, Fault, ModelEngine, derive_rng
from proxy.simulator.scenario import ProviderScenario

ErrorCounts = TypedDict(
    "ErrorCounts", {"500": int, "429": int, "hang": int, "drop": int, "refused": int}
)


class Counts(TypedDict):
    """Counters as ``/stats`` shows them. ``requests`` counts every request received (whatever
    became of it), ``cold_starts`` the cold starts served, ``aborted`` the requests whose
    client went away before the end, ``completed`` the answers delivered to the end."""

    requests: int
    cold_starts: int
    aborted: int
    completed: int
    errors: ErrorCounts
    in_flight: int


class ModelStats(Counts):
    """Counters of one model, and the label of the phase in force for the next request
    (None outside every phase)."""

    phase: str | None


class ProviderStats(Counts):
    """Counters of a provider (sums over its models), each of its models, and market time:
    unscaled seconds since the provider started or its counters were last reset."""

    provider: str
    market_time_s: float
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
            models[model] = {
                **_counts(engine.counters, engine.in_flight),
                "phase": engine.active()[0],
            }
        in_flight = sum(engine.in_flight for engine in self.engines.values())
        market_time_s = max((e.market_time_s() for e in self.engines.values()), default=0.0)
        return {
            "provider": self.name,
            **_counts(total, in_flight),
            "market_time_s": round(market_time_s, 3),
            "models": models,
        }

    def reset_stats(self) -> None:
        """Zero every counter and restart market time (requests in flight stay in flight)."""
        for engine in self.engines.values():
            engine.reset_counters()


def _counts(counters: Counters, in_flight: int) -> Counts:
    errors: ErrorCounts = {
        "500": counters.errors[Fault.ERROR_500.value],
        "429": counters.errors[Fault.ERROR_429.value],
        "hang": counters.errors[Fault.HANG.value],
        "drop": counters.errors[Fault.DROP.value],
        "refused": counters.errors[Fault.REFUSED.value],
    }
    return {
        "requests": counters.requests,
        "cold_starts": counters.cold_starts,
        "aborted": counters.aborted,
        "completed": counters.completed,
        "errors": errors,
        "in_flight": in_flight,
    }
