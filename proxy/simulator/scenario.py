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


class Behaviour(_Frozen):
    """The fields a behaviour has and a phase may override. Delays are unscaled seconds."""

    warm_ttft: Lognormal
    cold_start: Lognormal = Lognormal(median_s=10.0, sigma=0.3)
    cold_chance: float = Field(default=0.0, ge=0, le=1)
    scale_to_zero_after_s: float | None = Field(default=None, gt=0)
    max_concurrency: int = Field(default=8, ge=1, le=10_000)
    tokens_per_s: float = Field(default=50.0, gt=0)
    prefill_tokens_per_s: float | None = Field(
        default=None, gt=0, description="prompt tokens per second: adds prompt / rate to TTFT"
    )
    error_500_rate: float = Field(default=0.0, ge=0, le=1)
    error_429_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = Field(default=1.0, ge=0)
    drop_midstream_rate: float = Field(default=0.0, ge=0, le=1)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    refuse: bool = Field(
        default=False, description="close every connection at once, without an answer"
    )

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


OVERRIDABLE = tuple(name for name in Behaviour.model_fields if name != "max_concurrency")


class Phase(_Frozen):
    """A stretch of a model's life where some behaviour fields differ from the base.

    A phase is active while every condition holds: market time (unscaled seconds since the
    server started or since ``POST /stats/reset``) in ``[from_s, until_s)`` and the number of
    requests the pair has received before this one in ``[from_request, until_request)``.
    Omitted bounds are open. Any behaviour field but ``max_concurrency`` may be overridden;
    the fields not given keep the base value. When several phases are active, the last one
    listed wins (its overrides replace the base, they are not merged with other phases).
    """

    name: str | None = Field(default=None, min_length=1, max_length=64)
    from_s: float = Field(default=0.0, ge=0)
    until_s: float | None = Field(default=None, gt=0)
    from_request: int = Field(default=0, ge=0)
    until_request: int | None = Field(default=None, ge=1)
    warm_ttft: Lognormal | None = None
    cold_start: Lognormal | None = None
    cold_chance: float | None = Field(default=None, ge=0, le=1)
    scale_to_zero_after_s: float | None = Field(default=None, gt=0)
    tokens_per_s: float | None = Field(default=None, gt=0)
    prefill_tokens_per_s: float | None = Field(default=None, gt=0)
    error_500_rate: float | None = Field(default=None, ge=0, le=1)
    error_429_rate: float | None = Field(default=None, ge=0, le=1)
    retry_after_s: float | None = Field(default=None, ge=0)
    drop_midstream_rate: float | None = Field(default=None, ge=0, le=1)
    hang_rate: float | None = Field(default=None, ge=0, le=1)
    refuse: bool | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.until_s is not None and self.until_s <= self.from_s:
            raise ValueError(f"until_s ({self.until_s:g}) must be above from_s ({self.from_s:g})")
        if self.until_request is not None and self.until_request <= self.from_request:
            raise ValueError(
                f"until_request ({self.until_request}) must be above "
                f"from_request ({self.from_request})"
            )
        if not self.overrides():
            raise ValueError("a phase must override at least one behaviour field")
        return self

    def overrides(self) -> dict[str, Any]:
        """The behaviour fields this phase sets, as given."""
        return {name: getattr(self, name) for name in OVERRIDABLE if name in self.model_fields_set}

    def label(self, index: int) -> str:
        """The name ``/stats`` reports: ``name``, or ``#index`` for an unnamed phase."""
        return self.name or f"#{index}"

    def holds(self, market_time_s: float, requests_before: int) -> bool:
        """Whether the phase is active at ``market_time_s`` for the next request."""
        return (
            self.from_s <= market_time_s
            and (self.until_s is None or market_time_s < self.until_s)
            and self.from_request <= requests_before
            and (self.until_request is None or requests_before < self.until_request)
        )


class ModelBehaviour(Behaviour):
    """How one provider serves one of its models, and the ``phases`` where that changes."""

    phases: tuple[Phase, ...] = Field(default=(), max_length=64)

    @model_validator(mode="after")
    def _phases_valid(self) -> Self:
        self.phase_behaviours()  # raises naming the phase whose merged behaviour is invalid
        return self

    def base(self) -> Behaviour:
        """The behaviour outside every phase."""
        return Behaviour.model_validate(self.model_dump(exclude={"phases"}))

    def phase_behaviours(self) -> tuple[tuple[str, Behaviour], ...]:
        """Each phase's label and its whole behaviour (the base with its overrides)."""
        base = self.model_dump(exclude={"phases"})
        out = []
        for index, phase in enumerate(self.phases):
            try:
                merged = Behaviour.model_validate({**base, **phase.overrides()})
            except ValidationError as exc:
                reasons = "; ".join(
                    str(e["msg"]).removeprefix("Value error, ")
                    for e in exc.errors(include_url=False)
                )
                raise ValueError(f"phases.{index}: {reasons}") from None
            out.append((phase.label(index), merged))
        return tuple(out)


class ProviderScenario(_Frozen):
    """One simulated provider: its key, its port (0 = any free port), its own model ids and
    whether it serves the Responses API besides chat, completions and embeddings."""

    api_key: str = Field(min_length=1)
    port: int = Field(default=0, ge=0, le=65535)
    models: dict[ModelId, ModelBehaviour] = Field(min_length=1)
    responses: bool = Field(
        default=True,
        description="serve the Responses API (POST /v1/responses); off: it answers 404",
    )


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
