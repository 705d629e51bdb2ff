"""Scenario of the simulated provider market: pydantic models and ``load_scenario``.

Owns the shape and the limits of a scenario (YAML or Python) and the error that names the
file and the dotted field path of a bad value. Owns no behaviour: drawing latencies lives in
``engine``, HTTP in ``server``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

ProviderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+$", max_length=64)]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lognormal(_Frozen):
    """A lognormal latency: ``median_s * exp(sigma * z)`` with z standard normal, in seconds."""

    median_s: float = Field(gt=0)
    sigma: float = Field(default=0.2, ge=0, le=5)


class ModelBehaviour(_Frozen):
    """How one provider serves one of its models. Delays are unscaled seconds."""

    warm_ttft: Lognormal
    cold_start: Lognormal = Lognormal(median_s=10.0, sigma=0.3)
    cold_chance: float = Field(default=0.0, ge=0, le=1)
    scale_to_zero_after_s: float | None = Field(default=None, gt=0)
    max_concurrency: int = Field(default=8, ge=1, le=10_000)
    tokens_per_s: float = Field(default=50.0, gt=0)
    error_500_rate: float = Field(default=0.0, ge=0, le=1)
    error_429_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = Field(default=1.0, ge=0)
    drop_midstream_rate: float = Field(default=0.0, ge=0, le=1)
    hang_rate: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _fault_rates_fit(self) -> Self:
        total = (
            self.error_500_rate + self.error_429_rate + self.hang_rate + self.drop_midstream_rate
        )
        if total > 1.0:
            raise ValueError(
                "error_500_rate + error_429_rate + hang_rate + drop_midstream_rate "
                f"must not exceed 1 (got {total:g})"
            )
        return self


class ProviderScenario(_Frozen):
    """One simulated provider: its key, its port (0 = any free port) and its own model ids."""

    api_key: str = Field(min_length=1)
    port: int = Field(default=0, ge=0, le=65535)
    models: dict[ModelId, ModelBehaviour] = Field(min_length=1)


class Scenario(_Frozen):
    """A whole market. ``time_scale`` multiplies every delay; ``seed`` makes runs reproducible."""

    time_scale: float = Field(default=1.0, gt=0)
    seed: int = Field(default=0, ge=0)
    providers: dict[ProviderName, ProviderScenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _ports_distinct(self) -> Self:
        seen: dict[int, str] = {}
        for name, provider in self.providers.items():
            if provider.port and provider.port in seen:
                raise ValueError(
                    f"providers.{name}.port {provider.port} is also used by "
                    f"providers.{seen[provider.port]}.port"
                )
            seen[provider.port] = name
        return self

    def with_time_scale(self, time_scale: float) -> Scenario:
        """Return a copy with another ``time_scale`` (validated)."""
        return self._replaced(time_scale=time_scale)

    def with_seed(self, seed: int) -> Scenario:
        """Return a copy with another base ``seed`` (validated)."""
        return self._replaced(seed=seed)

    def with_free_ports(self) -> Scenario:
        """Return a copy where every provider listens on any free port."""
        return self.with_ports(dict.fromkeys(self.providers, 0))

    def with_ports(self, ports: Mapping[str, int]) -> Scenario:
        """Return a copy where the named providers listen on the given ports (0 = any free)."""
        unknown = set(ports) - set(self.providers)
        if unknown:
            known = ", ".join(self.providers)
            raise ValueError(f"unknown providers {sorted(unknown)} (known: {known})")
        providers = self.model_dump()["providers"]
        for name, port in ports.items():
            providers[name]["port"] = port
        return self._replaced(providers=providers)

    def _replaced(self, **changes: Any) -> Scenario:
        return Scenario.model_validate({**self.model_dump(), **changes})


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate; the message names the file."""


def load_scenario(path: str | PathLike[str] | Traversable) -> Scenario:
    """Read and validate a scenario YAML file (a path, or a package resource).

    Raises ``ScenarioError`` naming the file, and for invalid values each dotted field path
    with its reason.
    """
    source: Path | Traversable = Path(path) if isinstance(path, str | PathLike) else path
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read scenario: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: invalid YAML: {exc}") from exc
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(str(source), exc)) from exc


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One message naming ``source`` and, per problem, the dotted field path and the reason."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg']}")
    return f"{source}: invalid scenario: " + "; ".join(problems)
