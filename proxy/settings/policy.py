"""policies/*.yaml as pydantic models, per-model lookup, and reload that keeps the last good.

A policy file has `defaults` and `models` (per-model overrides, deep-merged over the
defaults). Later files override earlier ones. Every model's merged policy is validated at
load time, so a bad override fails the load, not a request.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from proxy.core.errors import ConfigError, InvalidRequest
from proxy.settings.auth import ClientControl
from proxy.settings.base import Frozen
from proxy.settings.config import Config, format_validation_error, load_config, read_yaml

log = logging.getLogger("ttft_router.policy")


@dataclass(frozen=True, slots=True)
class ChangeParams:
    """What a policy says about change detection (learning.change)."""

    baseline: int = 30
    warm_k: float = 1.0
    warm_h: float = 8.0
    cold_h: float = 5.0
    cold_factor: float = 4.0
    cold_floor_s: float = 2.0
    pre_change_weight: float = 0.02
    others_weight: float = 0.5


@dataclass(frozen=True, slots=True)
class WindowParams:
    """What a policy says about one model's window and statistics."""

    max_samples: int = 200
    max_age_s: float = 3600.0
    min_samples: int = 20
    cold_factor: float = 4.0
    cold_floor_s: float = 2.0
    objective: str = "tail_mean"  # tail_mean, expected or a key of OBJECTIVE_QUANTILE
    draws: int = 64
    prior_weight: float = 0.5
    half_life_s: float = 120.0
    steered_weight: float = 0.1  # a steered sample's weight in the beliefs (Source.STEERED)
    change: ChangeParams | None = ChangeParams()  # None: no change detection
    prefill_s_per_token: float = 5e-5  # a pair's prefill slope until its samples fix one


class WindowBounds(Frozen):
    max_samples: int = Field(200, gt=0, le=100_000)
    max_age_s: float = Field(3600.0, gt=0)


class Failover(Frozen):
    max_attempts: int = Field(3, ge=1, le=20)
    total_deadline_s: float = Field(120.0, gt=0, description="for all attempts together")
    race_cold: bool = Field(
        True,
        description="a failover to a probably cold pair races it with the next candidate "
        "(counted in the hedge budget), so an outage does not queue every request behind "
        "one cold start",
    )


class CvBands(Frozen):
    """CV (std/mean) thresholds: below `tight` is tight, below `variable` is variable,
    above is cold-start-prone (MISSION.md's rule-of-thumb bands)."""

    tight: float = Field(0.30, gt=0)
    variable: float = Field(1.00, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CvBands:
        if self.tight >= self.variable:
            raise ValueError("cv_bands.tight must be below cv_bands.variable")
        return self


class ColdStart(Frozen):
    """A sample is cold-start-like when above `factor` x median and above `floor_s`."""

    factor: float = Field(4.0, gt=1)
    floor_s: float = Field(2.0, ge=0)


class Circuit(Frozen):
    """A pair whose last `consecutive_errors` attempts all failed rests for `cooldown_s`.
    What a client caused is not held against a pair (routing.circuit, docs/security.md)."""

    consecutive_errors: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, gt=0)
    trial_interval_s: float = Field(
        1.0,
        ge=0,
        description="while every pair of a model is out, at most one trial per "
        "pair this often (per replica): a dead provider is not hammered, recovery is seen",
    )
    max_retry_after_s: float = Field(
        60.0, gt=0, description="a 429's Retry-After keeps the pair out this long at most"
    )
    long_prompt_tokens: int = Field(
        8192,
        ge=1,
        description="a first-token timeout of a prompt this long or longer is "
        "the prompt's, not held against the pair (its censored sample is kept)",
    )


class Uncertainty(Frozen):
    """The posterior of each pair's objective (learning.stats.score_model, docs/policies.md)."""

    draws: int = Field(64, ge=8, le=1024, description="posterior draws per pair and refresh")
    prior_weight: float = Field(
        0.5, ge=0, le=1000, description="pseudo-observations pooled from the model's pairs"
    )
    half_life_s: float = Field(120.0, gt=0, description="a sample's weight halves this often")
    steered_weight: float = Field(
        0.1,
        ge=0,
        le=1,
        description="the weight of a sample whose request the client's own "
        "controls placed (provider.only, order, sort...): such requests may be chosen to "
        "make a pair look slow; 0 leaves them out of the beliefs",
    )


class ChangeDetection(Frozen):
    """Notice when a pair's latency changes (learning.change, docs/policies.md): its evidence
    from before the change stops counting, and the model's other pairs are measured again."""

    enabled: bool = True
    baseline: int = Field(
        30, ge=5, le=1000, description="samples of a regime that set its reference"
    )
    warm_k: float = Field(
        1.0, gt=0, description="allowance per warm sample, in robust sds of log TTFT"
    )
    warm_h: float = Field(8.0, gt=0, description="threshold of the warm latency CUSUMs")
    cold_h: float = Field(5.0, gt=0, description="threshold of the cold-start CUSUM")
    pre_change_weight: float = Field(
        0.02,
        ge=0,
        le=1,
        description="a changed pair's samples from before the change count this much",
    )
    others_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="the model's other pairs' samples from before the change count this much",
    )
    remeasure_s: float = Field(
        300.0,
        gt=0,
        description="after a change the model's other pairs are probed (burst_min samples "
        "each) for at most this long",
    )


class PrefillPolicy(Frozen):
    """TTFT against the prompt's size (learning.prefill, docs/policies.md): scores per size
    class, and a long probe for a pair whose prefill rate is unknown while the model gets
    long prompts."""

    prior_tokens_per_s: float = Field(
        20_000.0, gt=0, description="a pair's prefill rate until its own samples show it"
    )
    probe_tokens: int = Field(
        4000, ge=600, le=100_000, description="the long probe's prompt size (tokens)"
    )
    probe_interval_s: float = Field(
        1800.0,
        gt=0,
        description="a long probe per pair at most this often once its window holds the "
        "3 long samples a slope needs (before that: one per probe.burst_spacing_s)",
    )
    long_probes: bool = Field(
        True, description="false: never a long probe (they cost more than short ones)"
    )


class KeepWarm(Frozen):
    """Keep the model's chosen pair warm in quiet hours (off by default: it costs probes)."""

    enabled: bool = False
    margin: float = Field(
        0.5, gt=0, le=1, description="probe after this share of the learned idle-to-cold time"
    )
    idle_to_cold_s: float = Field(
        300.0, gt=0, description="assumed until one is learned from the pair's samples"
    )
    min_idle_s: float = Field(
        20.0, gt=0, description="never probe more often than this (a floor on the spacing)"
    )


class Standby(Frozen):
    """Keep the pairs next in line for failover warm while their model has traffic: probed
    before their learned idle-to-cold time (keep_warm's margin and assumed idle-to-cold),
    so an outage of the chosen pair does not turn into a cold start for every request."""

    enabled: bool = True
    count: int = Field(1, ge=0, le=5, description="pairs kept warm beside the chosen one")
    traffic_s: float = Field(
        600.0, gt=0, description="the model has traffic: a passive sample within this long"
    )


class Probe(Frozen):
    """When the prober measures a model's pairs (docs/probing.md). Times are seconds of a
    real market; the config's `prober.time_scale` multiplies every one of them."""

    enabled: bool = True
    interval_s: float = Field(120.0, gt=0, description="gap filling: one probe per interval")
    jitter: float = Field(0.2, ge=0, le=1, description="share of a slot the probe moves in")
    enough_passive: int = Field(
        3, ge=1, description="passive samples within one interval that make probing needless"
    )
    burst_spacing_s: float = Field(
        10.0, gt=0, description="a new or emptied pair: one probe per spacing to min_samples"
    )
    burst_min: int = Field(
        5,
        ge=1,
        description="a burst ends after this many samples when the pair is clearly "
        "worse than the leader (best in under 5% of the posterior draws), else at min_samples",
    )
    stale_after_s: float = Field(
        600.0, gt=0, description="a pair whose newest sample is older is probed at once"
    )
    timeout_s: float = Field(120.0, gt=0, description="first-token timeout of a probe")
    max_tokens: int = Field(1, ge=1, le=64)
    prompt: str = Field("Reply with one word: ready.", min_length=1, max_length=2000)
    keep_warm: KeepWarm = KeepWarm()
    standby: Standby = Standby()


class Hedge(Frozen):
    """Hedging: ask the next candidate too when the chosen one has no first token after a
    delay; the first to produce output wins, the other is closed (docs/policies.md)."""

    enabled: bool = Field(False, description="costs extra upstream requests: off by default")
    quantile: Literal["median", "p90", "p95", "p99"] = Field(
        "p90", description="the delay is this quantile of the chosen pair's current TTFT"
    )
    delay_s: float | None = Field(None, gt=0, description="a fixed delay instead")
    min_delay_s: float = Field(0.05, ge=0)
    max_delay_s: float = Field(10.0, gt=0, description="also the delay of an unmeasured pair")
    max_hedges: int = Field(1, ge=1, le=5, description="extra attempts per request at most")
    cold_chance: float = Field(
        0.5, gt=0, le=1, description="hedge at once when the chosen pair is this likely cold"
    )
    budget_share: float = Field(
        0.10, ge=0, le=1, description="hedges <= this share of requests over the window"
    )
    budget_window_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> Hedge:
        if self.min_delay_s > self.max_delay_s:
            raise ValueError("hedge.min_delay_s must not exceed hedge.max_delay_s")
        return self


class MaxPrice(Frozen):
    """USD per 1M tokens; a pair priced above either, or priced nowhere, is not used."""

    prompt: float | None = Field(None, ge=0)
    completion: float | None = Field(None, ge=0)


class CostObjective(Frozen):
    """The cheapest pair whose `objective` (its estimate) is at most `ceiling_s`; when no
    pair is under the ceiling, the fastest (docs/cost.md)."""

    ceiling_s: float = Field(gt=0)


class Affinity(Frozen):
    """Keep a conversation (an affinity key) on the provider that served it while that pair
    is healthy (docs/request-controls.md). Off by default."""

    enabled: bool = False
    ttl_s: float = Field(600.0, gt=0, description="held this long after its last request")
    from_user: bool = Field(True, description="the body's `user` field is a key too")
    max_keys: int = Field(100_000, ge=1, le=10_000_000, description="per replica, oldest go")


# kind -> (a request field, the RequestLimits cap that bounds it); `logprobs` is a count only
# in text completions (in chat it is a boolean, and top_logprobs the count).
class RequestLimits(Frozen):
    """What one request may ask for: each answer is held whole for a stream=false client and
    costs the operator's account. Checked before routing; past a cap: 400 naming the field.
    null: no cap."""

    max_n: int | None = Field(4, ge=1, description="choices per request (n, best_of)")
    max_tokens: int | None = Field(
        32768, ge=1, description="max_tokens, max_completion_tokens, max_output_tokens"
    )
    max_top_logprobs: int | None = Field(
        5, ge=0, description="top_logprobs (chat, responses), logprobs (text completions)"
    )

    def check(self, body: Mapping[str, Any], fields: Iterable[tuple[str, str]]) -> None:
        """Raise InvalidRequest (param: the field) for a value that is not a whole number
        or is above its cap. `fields`: (request field, the cap of this model that bounds it),
        as the endpoint says (serving.endpoint)."""
        for name, cap_name in fields:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequest(f"'{name}' must be a whole number", param=name)
            cap: int | None = getattr(self, cap_name)
            if cap is not None and value > cap:
                raise InvalidRequest(
                    f"'{name}' is {value}, above this proxy's limit of {cap} for this model "
                    f"(policy limits.{cap_name})",
                    param=name,
                )


ENDPOINT_NAMES = ("chat", "completions", "embeddings", "responses")


class Fields(Frozen):
    """What the proxy does to a client's body fields before sending it (serving.fields): only
    OpenAI's parameters are taken at all (and a provider's own `extra_fields`); of those,
    `strip` are removed and `force` sets values per endpoint (docs/security.md)."""

    strip: list[str] = Field(
        default_factory=lambda: ["service_tier"],
        description="removed from every request (service_tier: premium billing)",
    )
    force: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"responses": {"store": False}},
        description="endpoint (chat, completions, embeddings, responses) -> field -> value "
        "set on every request to it (responses: store false keeps tenants' requests out of "
        "the operator's stored responses)",
    )

    @field_validator("force")
    @classmethod
    def _known_endpoints(cls, force: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(force) - set(ENDPOINT_NAMES))
        if unknown:
            raise ValueError(
                f"fields.force: unknown endpoint {', '.join(unknown)} (endpoints: "
                f"{', '.join(ENDPOINT_NAMES)})"
            )
        for values in force.values():
            if "model" in values:
                raise ValueError("fields.force: 'model' is set by routing, not by policy")
        return force


class ModelPolicy(Frozen):
    mode: Literal["best", "weighted"] = "best"
    objective: Literal["p50", "p90", "p95", "p99", "tail_mean", "expected"] = Field(
        "tail_mean",
        description="TTFT statistic to minimise; tail_mean is the mean of the slowest 5%; "
        "expected: P(cold now) x cold-start TTFT + (1 - P(cold now)) x median",
    )
    min_samples: int = Field(20, ge=1)
    window: WindowBounds = WindowBounds()
    exploration_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of user requests routed by a posterior draw (Thompson sampling); "
        "the rest go to the pair with the best estimate",
    )
    probed_exploration_share: float = Field(
        0.1, ge=0, le=1, description="exploration_share while the prober measures the model"
    )
    uncertainty: Uncertainty = Uncertainty()
    hysteresis: float = Field(
        0.10, ge=0, lt=1, description="a challenger must beat the incumbent by this share"
    )
    failover: Failover = Failover()
    cv_bands: CvBands = CvBands()
    cold_start: ColdStart = ColdStart()
    change: ChangeDetection = ChangeDetection()
    prefill: PrefillPolicy = PrefillPolicy()
    circuit: Circuit = Circuit()
    hedge: Hedge = Hedge()
    exclude: list[str] = Field(default_factory=list, description="providers never used")
    probe: Probe = Probe()
    # What shapes the route besides measurements (proxy.routing.controls, docs/policies.md).
    allow: list[str] | None = Field(None, description="the only providers used; null: all")
    pin: str | None = Field(None, description="always this provider first while it is up")
    order: list[str] = Field(
        default_factory=list, description="a fixed preference order; measurements rank the rest"
    )
    allow_fallbacks: bool = Field(
        True, description="false: with pin or order, no other provider is tried"
    )
    max_price_per_million: MaxPrice | None = None
    cost: CostObjective | None = Field(None, description="the cost objective (docs/cost.md)")
    client_controls: list[ClientControl] = Field(
        default_factory=list,
        description="the request controls every client may use for this model (beside "
        "those granted to each client by auth.clients.*.controls); default: none",
    )
    affinity: Affinity = Affinity()
    limits: RequestLimits = RequestLimits()
    fields: Fields = Fields()

    @model_validator(mode="after")
    def _window_holds_proof(self) -> ModelPolicy:
        if self.min_samples > self.window.max_samples:
            raise ValueError("min_samples must not exceed window.max_samples")
        return self

    @model_validator(mode="after")
    def _steering_consistent(self) -> ModelPolicy:
        for knob, names in (("pin", [self.pin] if self.pin else []), ("order", self.order)):
            bad = [p for p in names if not self.is_usable(p)]
            if bad:
                raise ValueError(
                    f"{knob} names {', '.join(map(repr, bad))}, which exclude or allow rules out"
                )
        if len(set(self.order)) != len(self.order):
            raise ValueError("order names a provider twice")
        return self

    def is_usable(self, provider: str) -> bool:
        """Not excluded, and allowed (when `allow` is given)."""
        return provider not in self.exclude and (self.allow is None or provider in self.allow)

    def named_providers(self) -> dict[str, list[str]]:
        """field -> the provider names it holds (each must be a configured provider)."""
        return {
            "exclude": self.exclude, "allow": self.allow or [],
            "pin": [self.pin] if self.pin else [], "order": self.order,
        }  # fmt: skip

    def window_params(self) -> WindowParams:
        return WindowParams(
            max_samples=self.window.max_samples,
            max_age_s=self.window.max_age_s,
            min_samples=self.min_samples,
            cold_factor=self.cold_start.factor,
            cold_floor_s=self.cold_start.floor_s,
            objective=self.objective,
            draws=self.uncertainty.draws,
            prior_weight=self.uncertainty.prior_weight,
            half_life_s=self.uncertainty.half_life_s,
            steered_weight=self.uncertainty.steered_weight,
            change=self._change_params(),
            prefill_s_per_token=1.0 / self.prefill.prior_tokens_per_s,
        )

    def _change_params(self) -> ChangeParams | None:
        c = self.change
        if not c.enabled:
            return None
        return ChangeParams(
            baseline=c.baseline, warm_k=c.warm_k, warm_h=c.warm_h, cold_h=c.cold_h,
            cold_factor=self.cold_start.factor, cold_floor_s=self.cold_start.floor_s,
            pre_change_weight=c.pre_change_weight, others_weight=c.others_weight,
        )  # fmt: skip


class PolicyFile(Frozen):
    defaults: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class PolicySet:
    """The validated policy of every model; models without an override get `default`."""

    default: ModelPolicy = field(default_factory=ModelPolicy)
    per_model: Mapping[str, ModelPolicy] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()

    def for_model(self, model: str) -> ModelPolicy:
        return self.per_model.get(model, self.default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [str(p) for p in self.sources],
            "defaults": self.default.model_dump(),
            "models": {m: p.model_dump() for m, p in self.per_model.items()},
        }


def load_policies(paths: Sequence[Path], providers: Collection[str] | None = None) -> PolicySet:
    """Read, merge and validate policy files. Raises ConfigError naming file and field.
    `providers`: the configured provider names; a policy naming another one is an error."""
    defaults: dict[str, Any] = {}
    overrides: dict[str, tuple[Path, dict[str, Any]]] = {}
    default_source: Path | None = None
    for path in paths:
        data = read_yaml(path) or {}
        try:
            parsed = PolicyFile.model_validate(data)
        except ValidationError as exc:
            raise format_validation_error(path, exc) from exc
        if parsed.defaults:
            defaults = _merge(defaults, parsed.defaults)
            default_source = path
        for model, over in parsed.models.items():
            previous = overrides.get(model, (path, {}))[1]
            overrides[model] = (path, _merge(previous, over))
    default = _validate(defaults, default_source, "defaults")
    per_model = {
        model: _validate(_merge(defaults, over), path, f"models.{model}")
        for model, (path, over) in overrides.items()
    }
    if providers is not None:
        sources = {"defaults": default_source, **{m: p for m, (p, _) in overrides.items()}}
        for where, pol in {"defaults": default, **per_model}.items():
            for name, listed in pol.named_providers().items():
                unknown = [p for p in listed if p not in providers]
                if unknown:
                    prefix = "" if where == "defaults" else "models."
                    raise ConfigError(
                        f"{sources[where] or '<defaults>'}: {prefix}{where}.{name}: unknown "
                        f"provider {', '.join(map(repr, unknown))} (configured: "
                        f"{', '.join(sorted(providers)) or 'none'})"
                    )
    return PolicySet(default=default, per_model=per_model, sources=tuple(paths))


def _validate(data: dict[str, Any], path: Path | None, where: str) -> ModelPolicy:
    try:
        return ModelPolicy.model_validate(data)
    except ValidationError as exc:
        lines = str(format_validation_error(path or Path("<defaults>"), exc)).splitlines()
        raise ConfigError(
            "\n".join(line.replace(": ", f": {where}.", 1) for line in lines)
        ) from exc


class PolicyHolder:
    """The current PolicySet; `reload()` swaps in a new one or keeps the last good."""

    def __init__(
        self,
        paths: Sequence[Path],
        initial: PolicySet | None = None,
        providers: Collection[str] | None = None,
    ) -> None:
        """Load `paths`, or start from `initial` (built in code) when it is given.
        `providers`: the configured provider names (a policy naming another is invalid)."""
        self.paths = tuple(paths)
        self.providers = frozenset(providers) if providers is not None else None
        self.current = initial if initial is not None else load_policies(self.paths, providers)
        self.last_error: str | None = None
        self.last_reload_at: float | None = None  # wall clock of the last reload attempt
        self._mtimes = self._read_mtimes()

    def _read_mtimes(self) -> tuple[float, ...]:
        out = []
        for p in self.paths:
            try:
                out.append(os.stat(p).st_mtime)
            except OSError:
                out.append(-1.0)
        return tuple(out)

    def reload(self) -> str | None:
        """Load the files again. Returns None on success, else the error (policy unchanged)."""
        self._mtimes = self._read_mtimes()
        self.last_reload_at = time.time()
        try:
            self.current = load_policies(self.paths, self.providers)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("policy reload failed, keeping the last good policy: %s", exc)
            return self.last_error
        self.last_error = None
        log.info("policy reloaded from %s", ", ".join(map(str, self.paths)))
        return None

    def reload_if_changed(self) -> str | None:
        """Reload when any file's mtime moved (called from a background loop)."""
        if self._read_mtimes() == self._mtimes:
            return None
        return self.reload()


def load_checked(path: str) -> tuple[Config, PolicyHolder]:
    """Config and policies, or ConfigError naming file, field and reason."""
    config = load_config(path)
    return config, PolicyHolder(config.policy_paths(), providers=config.providers)
