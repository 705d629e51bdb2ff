"""The words of DESIGN.md as plain immutable data: pair, sample, outcome, score, decision.

This module owns the shapes every layer passes around. It imports nothing from `proxy`
and does no I/O; serialisation to dicts lives here so that every store and surface
renders a sample or a decision the same way.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple


class LazyText:
    """Text rendered on first use, then kept (a routing reason: a ranking's reason text costs
    more than the ranking itself, and most decisions are never read by anyone)."""

    __slots__ = ("_render", "_text")

    def __init__(self, render: Callable[[], str]) -> None:
        self._render: Callable[[], str] | None = render
        self._text = ""

    def __str__(self) -> str:
        if self._render is not None:
            self._text, self._render = self._render(), None
        return self._text


class Outcome(enum.StrEnum):
    """How one upstream attempt ended (as far as the first token is concerned)."""

    OK = "ok"
    TIMEOUT = "timeout"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    CONNECT_ERROR = "connect_error"
    CANCELLED = "cancelled"
    # The first token arrived, then the stream broke: the TTFT is real, the request failed.
    STREAM_ERROR = "stream_error"

    @property
    def is_error(self) -> bool:
        """Counts against the pair's error rate (a client cancel is not the pair's fault)."""
        return self in ERROR_OUTCOMES


ERROR_OUTCOMES = frozenset(o for o in Outcome if o not in (Outcome.OK, Outcome.CANCELLED))


class Source(enum.StrEnum):
    """Who placed the attempt: routing (passive: user traffic routed by the scores), the
    client's own controls (steered: counts less in the scores, learning.stats), the prober,
    or a benchmark run."""

    PASSIVE = "passive"
    STEERED = "steered"
    PROBE = "probe"
    BENCH = "bench"


class Pair(NamedTuple):
    """One model on one provider (a deployment). Hashable, cheap, ordered."""

    model: str
    provider: str

    def __str__(self) -> str:
        return f"{self.model}@{self.provider}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One TTFT observation of a pair.

    `ttft_s` is None when no output arrived. `censored_at_s` is set when the attempt was
    cut off before its first token (client cancel, hedge loser, timeout): all we know
    is that the TTFT is greater than that many seconds. Times are seconds; `timestamp`
    is wall-clock epoch seconds. `client` names the client whose request it measured ("" for
    probes and samples written before clients had names): a label, never part of the pair,
    so it does not split the pair's window.
    """

    model: str
    provider: str
    outcome: Outcome
    ttft_s: float | None
    timestamp: float
    ttfb_s: float | None = None
    total_s: float | None = None
    censored_at_s: float | None = None
    source: Source = Source.PASSIVE
    prompt_tokens: int = 0
    replica: str = ""
    output_tokens: int | None = None
    decode_s: float | None = None
    client: str = ""

    @property
    def pair(self) -> Pair:
        return Pair(self.model, self.provider)

    @property
    def is_traffic(self) -> bool:
        """A client's request (routed by the scores or placed by its controls)."""
        return self.source is Source.PASSIVE or self.source is Source.STEERED

    @property
    def is_censored(self) -> bool:
        return self.ttft_s is None and self.censored_at_s is not None

    @property
    def tokens_per_s(self) -> float | None:
        """Decode throughput: output tokens after the first per second after the first
        token; None unless at least two tokens came over a measurable time."""
        tokens, decode_s = self.output_tokens, self.decode_s
        if tokens is None or decode_s is None or tokens < 2 or decode_s <= 0.0:
            return None
        return (tokens - 1) / decode_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "outcome": self.outcome.value,
            "ttft_s": self.ttft_s,
            "timestamp": self.timestamp,
            "ttfb_s": self.ttfb_s,
            "total_s": self.total_s,
            "censored_at_s": self.censored_at_s,
            "source": self.source.value,
            "prompt_tokens": self.prompt_tokens,
            "replica": self.replica,
            "output_tokens": self.output_tokens,
            "decode_s": self.decode_s,
            "client": self.client,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        """Inverse of `to_dict`; raises KeyError/ValueError/TypeError on a malformed dict."""
        return cls(
            model=str(data["model"]),
            provider=str(data["provider"]),
            outcome=Outcome(data["outcome"]),
            ttft_s=_opt_float(data.get("ttft_s")),
            timestamp=float(data["timestamp"]),
            ttfb_s=_opt_float(data.get("ttfb_s")),
            total_s=_opt_float(data.get("total_s")),
            censored_at_s=_opt_float(data.get("censored_at_s")),
            source=Source(data.get("source", "passive")),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            replica=str(data.get("replica", "")),
            output_tokens=_opt_count(data.get("output_tokens")),
            decode_s=_opt_float(data.get("decode_s")),
            client=str(data.get("client", "")),
        )


SAMPLE_TIME = attrgetter("timestamp")  # sort key of samples, oldest first (no Python call)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected a finite non-negative number of seconds, got {value!r}")
    return number


def _opt_count(value: Any) -> int | None:
    if value is None:
        return None
    count = int(value)
    if count < 0:
        raise ValueError(f"expected a token count >= 0, got {value!r}")
    return count


@dataclass(frozen=True, slots=True)
class Throughput:
    """Decode throughput of a pair's window (learning.decode): output tokens per second
    after the first token, over the `n` answers that measured it.

    Percentiles read as OpenRouter publishes them: `p90` is the rate at least 90% of the
    answers reached, so p50 >= p75 >= p90 >= p99 (the slow tail, like TTFT's p90 is).
    `output_tokens`: the median length of those answers (tokens), the pair's typical
    output when a request names no max_tokens."""

    n: int
    p50: float
    p75: float
    p90: float
    p99: float
    output_tokens: float

    def percentile(self, name: str) -> float:
        """The figure named p50, p75, p90 or p99."""
        value: float = getattr(self, name)
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "p50": self.p50, "p75": self.p75, "p90": self.p90, "p99": self.p99,
            "output_tokens": self.output_tokens,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Belief:
    """How sure we are of a pair's routing objective: a posterior over it (proxy.learning.stats).

    `draws` are K independent posterior draws of the objective (seconds), made once per
    scoreboard refresh; routing picks one per request (Thompson sampling). `estimate` is
    their median, `low`/`high` their 5% and 95% points (the 90% range), `lowest`/`highest`
    their extremes. `n_eff` is the aged weight of the pair's own observations, `prior_weight`
    that of the pseudo-observations pooled from the model's pairs. `prior` is the belief
    about a pair of the model nobody has measured yet (like a random measured pair).
    """

    objective: str
    estimate: float
    low: float
    high: float
    lowest: float
    highest: float
    draws: tuple[float, ...]
    n_eff: float
    prior_weight: float
    prior: Belief | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "estimate_s": self.estimate,
            "range_90_s": [self.low, self.high],
            "n_eff": round(self.n_eff, 2),
            "prior_weight": self.prior_weight,
        }


@dataclass(frozen=True, slots=True)
class ColdModel:
    """How a pair's idle time predicts a cold-start-like sample (proxy.learning.coldness).

    `idle_to_cold_s`: the learned scale-down time (None: not learned yet). `after_idle`: the
    chance of a cold start after an idle of at least that long; `by_chance`: after a shorter
    one (or after any, when nothing is learned). `cold_ttft_s`: the median TTFT of its
    cold-start-like samples (None: none seen). `last_active_ts`: when it last finished a
    request (wall clock), None when unknown."""

    idle_to_cold_s: float | None
    after_idle: float
    by_chance: float
    cold_ttft_s: float | None
    last_active_ts: float | None
    n_gaps: int = 0

    def idle_s(self, now: float) -> float | None:
        return None if self.last_active_ts is None else max(0.0, now - self.last_active_ts)

    def chance(self, now: float, busy: bool = False) -> float:
        """The chance that the pair is cold at `now` (`busy`: a request is in flight on it)."""
        idle = None if busy else self.idle_s(now)
        if idle is not None and self.idle_to_cold_s is not None and idle >= self.idle_to_cold_s:
            return self.after_idle
        return self.by_chance

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "idle_to_cold_s": self.idle_to_cold_s,
            "after_idle": round(self.after_idle, 4),
            "by_chance": round(self.by_chance, 4),
            "cold_ttft_s": self.cold_ttft_s,
            "idle_s": self.idle_s(now),
            "chance_now": round(self.chance(now), 4),
            "n_gaps": self.n_gaps,
        }


@dataclass(frozen=True, slots=True)
class Prefill:
    """A pair's TTFT against its prompt's size (learning.prefill): `base_s` +
    `s_per_token` x prompt tokens over its warm samples. `identified`: its own samples span
    enough sizes to fix the slope; otherwise the slope is the model's pooled one or the
    policy's prior. `n`: the warm samples fitted."""

    base_s: float
    s_per_token: float
    identified: bool
    n: int

    def predict_s(self, prompt_tokens: int) -> float:
        return self.base_s + self.s_per_token * prompt_tokens

    def to_dict(self) -> dict[str, Any]:
        rate = 1.0 / self.s_per_token if self.s_per_token > 0 else None
        return {
            "base_s": round(self.base_s, 6), "s_per_token": self.s_per_token,
            "s_per_1k_tokens": round(self.s_per_token * 1e3, 6),
            "tokens_per_s": round(rate) if rate is not None else None,
            "identified": self.identified, "n": self.n,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Change:
    """A change of a pair's latency found in its window (learning.change): since `at_ts`
    (the first sample of the new regime; wall clock), found at `detected_ts` after
    `n_after` samples. `what` moved: "cold starts" (`before`/`after` are shares of
    cold-start-like samples) or "warm latency" (p90 in seconds before and after)."""

    at_ts: float
    detected_ts: float
    direction: str  # degraded | improved
    what: str
    before: float
    after: float
    n_after: int

    def describe(self, provider: str) -> str:
        """'provider-a degraded at 12:03:04: warm latency p90 0.50 -> 3.10 s over 9 samples'."""
        when = time.strftime("%H:%M:%S", time.gmtime(self.at_ts))
        if self.what == "cold starts":
            moved = f"cold starts {self.before:.0%} -> {self.after:.0%}"
        else:
            moved = f"warm latency p90 {self.before:.2f} -> {self.after:.2f} s"
        return f"{provider} {self.direction} at {when}: {moved} over {self.n_after} samples"

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at_ts, "detected_at": self.detected_ts, "direction": self.direction,
            "what": self.what, "before": self.before, "after": self.after,
            "n_after": self.n_after,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Score:
    """Statistics of one pair's recent window. Latency figures are seconds, None when n == 0.

    `n` counts latency observations (first tokens plus censored attempts); errors are
    counted apart in `n_errors` and `error_rate` (errors / all attempts).
    """

    model: str
    provider: str
    n: int
    n_censored: int
    n_errors: int
    n_attempts: int
    median: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    tail_mean: float | None  # mean of the slowest 5% (expected shortfall at 95%)
    mean: float | None
    std: float | None
    cv: float | None
    std_over_median: float | None
    tail_ratio: float | None
    cold_share: float | None
    error_rate: float
    consecutive_errors: int
    newest_ts: float | None
    last_error_ts: float | None
    n_passive: int
    n_probe: int
    is_proven: bool
    belief: Belief | None = None  # set by the scoreboard (stats.score_model), else None
    cold: ColdModel | None = None  # set by the scoreboard (proxy.learning.coldness), else None
    change: Change | None = None  # the newest change found in the window (learning.change)
    recent_ts: tuple[float, ...] = ()  # the newest samples' timestamps (up to 10), oldest first
    prefill: Prefill | None = None  # TTFT against prompt size (learning.prefill)
    belief_class: int = 0  # the prompt size class `belief` is for (learning.prefill)
    sized: tuple[tuple[int, Belief], ...] = ()  # the beliefs of the other size classes
    n_steered: int = 0  # client traffic placed by the client's controls (Source.STEERED)
    p75: float | None = None  # TTFT, like the quantiles above (OpenRouter's latency cutoffs)
    throughput: Throughput | None = None  # decode throughput (learning.decode); None: unmeasured

    def belief_for(self, size_class: int) -> Belief | None:
        """The belief for prompts of `size_class`; `belief` when the model has no sample
        of that size (no pair is known better there than at its usual size)."""
        if size_class == self.belief_class:
            return self.belief
        for cls, belief in self.sized:
            if cls == size_class:
                return belief
        return self.belief

    def n_since(self, ts: float) -> int:
        """Samples newer than `ts` among the newest ten (10 means: at least 10)."""
        return sum(1 for t in self.recent_ts if t >= ts)

    @property
    def pair(self) -> Pair:
        return Pair(self.model, self.provider)

    def age_s(self, now: float) -> float | None:
        """Seconds since the newest sample, or None when the window is empty."""
        return None if self.newest_ts is None else max(0.0, now - self.newest_ts)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "n": self.n,
            "n_censored": self.n_censored,
            "n_errors": self.n_errors,
            "n_attempts": self.n_attempts,
            "median_s": self.median,
            "p75_s": self.p75,
            "p90_s": self.p90,
            "p95_s": self.p95,
            "p99_s": self.p99,
            "tail_mean_s": self.tail_mean,
            "mean_s": self.mean,
            "std_s": self.std,
            "cv": self.cv,
            "std_over_median": self.std_over_median,
            "tail_ratio": self.tail_ratio,
            "cold_share": self.cold_share,
            "error_rate": self.error_rate,
            "consecutive_errors": self.consecutive_errors,
            "source_mix": {
                "passive": self.n_passive,
                "steered": self.n_steered,
                "probe": self.n_probe,
            },
            "age_s": self.age_s(now),
            "is_proven": self.is_proven,
            "belief": self.belief.to_dict() if self.belief is not None else None,
            "cold": self.cold.to_dict(now) if self.cold is not None else None,
            "change": self.change.to_dict() if self.change is not None else None,
            "prefill": self.prefill.to_dict() if self.prefill is not None else None,
            "beliefs_by_size": {str(c): b.to_dict() for c, b in self.sized} or None,
            "throughput": self.throughput.to_dict() if self.throughput is not None else None,
        }


def empty_score(pair: Pair) -> Score:
    """The score of a pair nobody has measured yet."""
    return Score(
        model=pair.model, provider=pair.provider, n=0, n_censored=0, n_errors=0,
        n_attempts=0, median=None, p90=None, p95=None, p99=None, tail_mean=None, mean=None,
        std=None,
        cv=None, std_over_median=None, tail_ratio=None, cold_share=None, error_rate=0.0,
        consecutive_errors=0, newest_ts=None, last_error_ts=None, n_passive=0, n_probe=0,
        is_proven=False,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider as the router saw it: its score and whether it may be tried."""

    provider: str
    upstream_model: str
    score: Score
    excluded_because: str | None = None

    @property
    def is_eligible(self) -> bool:
        return self.excluded_because is None


@dataclass(slots=True)
class Attempt:
    """One try of one candidate within a request (filled in by dispatch)."""

    provider: str
    outcome: Outcome
    ttft_s: float | None = None
    elapsed_s: float = 0.0
    status: int | None = None
    error: str | None = None
    hedge: bool = False  # started as a hedge beside an attempt still waiting
    started_s: float = 0.0  # seconds after the request's first attempt started

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "outcome": self.outcome.value,
            "ttft_s": self.ttft_s,
            "elapsed_s": round(self.elapsed_s, 6),
            "status": self.status,
            "error": self.error,
            "hedge": self.hedge,
            "started_s": round(self.started_s, 6),
        }


@dataclass(slots=True)
class HedgeRecord:
    """What hedging did for one request: fired (after `after_s`, on `basis`) or not (`skipped`
    says why), and, once the race is over, the winner and how long the loser had waited.

    `trigger`: "late" (no first token after the delay) or "cold" (the primary was probably
    cold: hedged at once). `winner_ttft_s`: the client's TTFT (from the request's first
    attempt). `saved_s`: when the hedge won, the primary's expected TTFT given it had none
    after `loser_censored_at_s` (its cold-start TTFT when it was cold-likely, else its tail
    mean), minus `winner_ttft_s`: an estimate, never below 0."""

    primary: str
    after_s: float
    basis: str
    trigger: str = "late"
    fired: bool = False
    skipped: str | None = None
    winner: str | None = None
    loser_censored_at_s: float | None = None  # the loser had no first token after this long
    winner_ttft_s: float | None = None
    saved_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "after_s": round(self.after_s, 6),
            "basis": self.basis,
            "trigger": self.trigger,
            "fired": self.fired,
            "skipped": self.skipped,
            "winner": self.winner,
            "loser_censored_at_s": self.loser_censored_at_s,
            "winner_ttft_s": self.winner_ttft_s,
            "saved_s": self.saved_s,
        }


@dataclass(slots=True)
class Decision:
    """For one request: the ranked candidates, the choice, the reason in words, what happened.

    `ranked` holds the eligible candidates in the order dispatch will try them;
    `excluded` the ones filtered out, each with its reason. `attempts` and `winner` are
    appended by dispatch while the request runs.
    """

    id: str
    model: str
    timestamp: float
    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    reason: str | LazyText  # str() renders it
    attempts: list[Attempt] = field(default_factory=list)
    winner: str | None = None
    replica: str = ""
    request_id: str = ""  # the client request's x-request-id (proxy.core.requestid)
    verdict: str = ""  # best, holding, exploring, failover, ... (metrics.verdict_of)
    hedge: HedgeRecord | None = None
    controls: list[str] | None = None  # what shaped the route besides measurements (controls)
    cost_usd: float | None = None  # usage x the winner's price, when both are known (pricing)
    client: str = ""  # the client's name (proxy.clients): "anonymous" for auth.api_keys
    # what the client was charged: cost_usd plus the estimated cost of its other attempts
    # (hedges, failover); None until the request is over or when nothing is priced
    charged_usd: float | None = None
    # the ranking's candidates as plain data at a time (routing.Ranking.candidates), or None
    candidates: Callable[[float], list[dict[str, Any]]] | None = None

    @property
    def choice(self) -> str | None:
        return self.ranked[0].provider if self.ranked else None

    def to_dict(self, now: float) -> dict[str, Any]:
        """The decision as plain data. With `candidates` (the ranking's memo: the requests
        one steady ranking routed share it) their rows are rendered once per `now`, and the
        returned dicts share them."""
        if self.candidates is not None:
            candidates = self.candidates(now)
        else:
            candidates = render_candidates(self.ranked, self.excluded, now)
        return {
            "id": self.id,
            "request_id": self.request_id,
            "verdict": self.verdict,
            "model": self.model,
            "timestamp": self.timestamp,
            "replica": self.replica,
            "choice": self.choice,
            "reason": str(self.reason),
            "candidates": candidates,
            "attempts": [a.to_dict() for a in self.attempts],
            "winner": self.winner,
            "hedge": self.hedge.to_dict() if self.hedge else None,
            "controls": self.controls or [],
            "cost_usd": self.cost_usd,
            "client": self.client or None,
            "charged_usd": self.charged_usd,
        }


def render_candidates(
    ranked: Sequence[Candidate], excluded: Sequence[Candidate], now: float
) -> list[dict[str, Any]]:
    return [
        {
            "provider": c.provider,
            "upstream_model": c.upstream_model,
            "excluded_because": c.excluded_because,
            "score": c.score.to_dict(now),
        }
        for c in (*ranked, *excluded)
    ]
