"""Simulated provider market: real OpenAI-protocol HTTP servers with scripted TTFT behaviour.

Several providers, each on its own loopback port with its own key and its own model ids,
each (provider, model) with its warm and cold TTFT distributions, concurrency, token rate
and injected faults. Used by the demo, the tests and the benchmarks; never by the proxy's
request path.
"""

from proxy.simulator.engine import Admission, Draw, Fault, ModelEngine, derive_rng
from proxy.simulator.market import Market
from proxy.simulator.provider import ModelStats, ProviderStats, SimulatedProvider
from proxy.simulator.scenario import (
    Behaviour,
    Lognormal,
    ModelBehaviour,
    Phase,
    ProviderScenario,
    Scenario,
    ScenarioError,
    load_scenario,
)
from proxy.simulator.server import PROVIDER_KEY, build_provider_app

__all__ = [
    "PROVIDER_KEY",
    "Admission",
    "Behaviour",
    "Draw",
    "Fault",
    "Lognormal",
    "Market",
    "ModelBehaviour",
    "ModelEngine",
    "ModelStats",
    "Phase",
    "ProviderScenario",
    "ProviderStats",
    "Scenario",
    "ScenarioError",
    "SimulatedProvider",
    "build_provider_app",
    "derive_rng",
    "load_scenario",
]
