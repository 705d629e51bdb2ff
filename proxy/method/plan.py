"""What a bench run measures (method), how it is paced, and how its figures are judged.

Owns the choice of pairs from a config (with one-line errors for an unknown model or
provider, or a provider without a key), the method a resumed run must share with the run
it continues, and the parsing of `--duration`. Does no I/O and sends nothing.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from proxy.core.domain import Pair
from proxy.core.errors import TtftRouterError
from proxy.learning.stats import OBJECTIVE_QUANTILE
from proxy.method.prompts import nonce_of, padded_prompt
from proxy.settings.config import Config, LiteLLMProvider
from proxy.settings.policy import ModelPolicy, PolicySet, WindowParams

CHAT_PATH = "/chat/completions"
DEFAULT_PROMPT = "Reply with one word: ready."
METHOD_REQUESTS = 75  # the published method's count for a verdict


class BenchError(TtftRouterError):
    """Bad input or a refused resume. The message is one line naming what is wrong."""


@dataclass(frozen=True, slots=True)
class PairSpec:
    """One pair to measure and the provider's own id of the model."""

    model: str
    provider: str
    upstream_model: str

    @property
    def pair(self) -> Pair:
        return Pair(self.model, self.provider)


@dataclass(frozen=True, slots=True)
class Method:
    """Everything that decides what a sample means; a resumed run must match it exactly.

    `prompt_tokens` (`--prompt-tokens`): the prompt sizes to measure; empty: the prompt as
    it is. With sizes, `requests` is per pair and size, each pair's requests take the sizes
    in turn (so every size sees the same hours), and each request's prompt is `prompt`
    padded to its size with text of its own (method/prompts.py)."""

    pairs: tuple[PairSpec, ...]
    requests: int
    warmup: int
    concurrency: int
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    prompt_tokens: tuple[int, ...] = ()

    @property
    def counted_per_pair(self) -> int:
        """Counted requests per pair: `requests` at each prompt size."""
        return self.requests * max(1, len(self.prompt_tokens))

    def size_of(self, index: int) -> int | None:
        """The prompt size of a pair's request `index` (either phase); None: unpadded."""
        sizes = self.prompt_tokens
        return sizes[index % len(sizes)] if sizes else None

    def body(self, spec: PairSpec, phase: str = "counted", index: int = 0) -> bytes:
        """The streamed chat request sent for `spec` as its request `index` of `phase`: the
        same bytes every time (without sizes, for every index too)."""
        size = self.size_of(index)
        prompt = self.prompt
        if size is not None:
            nonce = nonce_of(spec.model, spec.provider, phase, index)
            prompt = padded_prompt(self.prompt, size, nonce)
        return orjson.dumps(
            {
                "model": spec.upstream_model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "stream": True,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pairs"] = [asdict(p) for p in self.pairs]
        data["prompt_sha256"] = hashlib.sha256(self.prompt.encode()).hexdigest()
        data["prompt_tokens"] = list(self.prompt_tokens)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Method:
        """Raises KeyError/TypeError/ValueError on a malformed dict."""
        return cls(
            pairs=tuple(
                PairSpec(str(p["model"]), str(p["provider"]), str(p["upstream_model"]))
                for p in data["pairs"]
            ),
            requests=int(data["requests"]),
            warmup=int(data["warmup"]),
            concurrency=int(data["concurrency"]),
            prompt=str(data["prompt"]),
            max_tokens=int(data["max_tokens"]),
            temperature=float(data["temperature"]),
            prompt_tokens=tuple(int(n) for n in data.get("prompt_tokens", ())),  # absent: none
        )

    def differences(self, asked: Method) -> list[str]:
        """What `asked` (this command) changes from this method (the file's), flag by flag."""
        out = []
        if self.pairs != asked.pairs:
            out.append(f"pairs {_pairs_text(asked.pairs)} here, {_pairs_text(self.pairs)} there")
        for name, flag in (("requests", "--requests"), ("warmup", "--warmup"),
                           ("concurrency", "--concurrency"), ("max_tokens", "--max-tokens"),
                           ("temperature", "temperature")):  # fmt: skip
            there, here = getattr(self, name), getattr(asked, name)
            if there != here:
                out.append(f"{flag} {here} here, {there} there")
        if self.prompt != asked.prompt:
            out.append("another prompt (--prompt-file)")
        if self.prompt_tokens != asked.prompt_tokens:
            out.append(f"--prompt-tokens {_sizes_text(asked.prompt_tokens)} here, "
                       f"{_sizes_text(self.prompt_tokens)} there")  # fmt: skip
        return out


@dataclass(frozen=True, slots=True)
class Pacing:
    """When requests go out. May change between a run and its resumption."""

    spacing_s: float = 3.0
    jitter: float = 0.25
    duration_s: float | None = None
    first_token_s: float | None = None  # None: each provider's timeouts.first_token_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelJudgement:
    """The policy's thresholds for one model: CV bands, the cold-start-like rule, and the
    routing objective (the statistic that names a pair best)."""

    cv_tight: float
    cv_variable: float
    cold_factor: float
    cold_floor_s: float
    objective: str = "tail_mean"  # a run log from before this field: the default policy's

    @classmethod
    def of(cls, policy: ModelPolicy) -> ModelJudgement:
        return cls(
            cv_tight=policy.cv_bands.tight,
            cv_variable=policy.cv_bands.variable,
            cold_factor=policy.cold_start.factor,
            cold_floor_s=policy.cold_start.floor_s,
            objective=policy.objective,
        )


@dataclass(frozen=True, slots=True)
class Judgement:
    """How figures become verdicts: per-model thresholds, and who may be named best."""

    models: Mapping[str, ModelJudgement]
    min_samples: int
    max_error_rate: float = 0.10
    default: ModelJudgement = field(default_factory=lambda: ModelJudgement.of(ModelPolicy()))

    def for_model(self, model: str) -> ModelJudgement:
        return self.models.get(model, self.default)

    def window_params(self, model: str) -> WindowParams:
        """Every sample counts: no count or age limit, unlike a routing window."""
        m = self.for_model(model)
        return WindowParams(
            max_samples=2**31 - 1,
            max_age_s=math.inf,
            min_samples=self.min_samples,
            cold_factor=m.cold_factor,
            cold_floor_s=m.cold_floor_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_samples": self.min_samples,
            "max_error_rate": self.max_error_rate,
            "models": {name: asdict(m) for name, m in self.models.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Judgement:
        """Raises KeyError/TypeError/ValueError on a malformed dict."""
        return cls(
            models={
                str(name): ModelJudgement(
                    cv_tight=float(m["cv_tight"]),
                    cv_variable=float(m["cv_variable"]),
                    cold_factor=float(m["cold_factor"]),
                    cold_floor_s=float(m["cold_floor_s"]),
                    objective=_objective(m.get("objective", "tail_mean")),
                )
                for name, m in data["models"].items()
            },
            min_samples=int(data["min_samples"]),
            max_error_rate=float(data["max_error_rate"]),
        )


def _objective(value: object) -> str:
    if value not in ("tail_mean", *OBJECTIVE_QUANTILE):
        raise ValueError(f"unknown objective {value!r}")
    return str(value)


def judgement_from_policies(
    policies: PolicySet, models: Sequence[str], min_samples: int, max_error_rate: float
) -> Judgement:
    per_model = {model: ModelJudgement.of(policies.for_model(model)) for model in models}
    return Judgement(per_model, min_samples=min_samples, max_error_rate=max_error_rate)


def select_pairs(
    config: Config, models: Sequence[str] | None, providers: Sequence[str] | None
) -> tuple[PairSpec, ...]:
    """The chosen model x provider pairs, in config order. Raises BenchError naming the
    unknown model or provider, the provider without a key, or an empty choice."""
    for model in models or ():
        if model not in config.models:
            raise BenchError(f"unknown model '{model}' (configured: {', '.join(config.models)})")
    for provider in providers or ():
        if provider not in config.providers:
            known = ", ".join(config.providers)
            raise BenchError(f"unknown provider '{provider}' (configured: {known})")
    pairs = tuple(
        PairSpec(model, provider, upstream_model)
        for model, entry in config.models.items()
        if not models or model in models
        for provider, upstream_model in entry.providers.items()
        if not providers or provider in providers
    )
    if not pairs:
        raise BenchError(
            f"no configured pair serves model(s) {', '.join(models or ['any'])} "
            f"on provider(s) {', '.join(providers or ['any'])}"
        )
    for provider in dict.fromkeys(p.provider for p in pairs):
        _require_key(config, provider)
    return pairs


def _require_key(config: Config, provider: str) -> None:
    settings = config.providers[provider]
    if settings.api_key is not None or "authorization" in {h.lower() for h in settings.headers}:
        return
    if isinstance(settings, LiteLLMProvider):
        return  # litellm may take the key from its own environment variable
    raise BenchError(
        f"provider '{provider}' has no api_key in {config.source or 'the config'} "
        f"(set providers.{provider}.api_key, e.g. to ${{{_env_name(provider)}}})"
    )


def _env_name(provider: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", provider.upper()) + "_API_KEY"


def _sizes_text(sizes: Sequence[int]) -> str:
    return ",".join(map(str, sizes)) or "(none)"


def _pairs_text(pairs: Sequence[PairSpec]) -> str:
    return ", ".join(str(p.pair) for p in pairs)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")


def parse_duration(text: str) -> float:
    """'3h', '90m', '1h30m', '45s' or plain seconds -> seconds. Raises ValueError."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or _DURATION.sub("", text).strip():
            raise ValueError(f"invalid duration '{text}' (use e.g. 3h, 90m, 1h30m, 45s)") from None
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid duration '{text}' (must be positive)")
    return seconds
