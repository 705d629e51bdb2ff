"""The words of DESIGN.md as plain immutable data: pair, sample, outcome, score, decision.

This module owns the shapes every layer passes around. It imports nothing from `proxy`
and does no I/O; serialisation to dicts lives here so that every store and surface
renders a sample or a decision the same way.
"""

from __future__ import annotations

import enum
import math
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
    PASSIVE = "passive"
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
    is wall-clock epoch seconds.
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

    @property
    def pair(self) -> Pair:
        return Pair(self.model, self.provider)

    @property
    def is_censored(self) -> bool:
        return self.ttft_s is None and self.censored_at_s is not None

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
        )


SAMPLE_TIME = attrgetter("timestamp")  # sort key of samples, oldest first (no Python call)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected a finite non-negative number of seconds, got {value!r}")
    return number


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
            "source_mix": {"passive": self.n_passive, "probe": self.n_probe},
            "age_s": self.age_s(now),
            "is_proven": self.is_proven,
            "belief": self.belief.to_dict() if self.belief is not None else None,
            "cold": self.cold.to_dict(now) if self.cold is not None else None,
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
