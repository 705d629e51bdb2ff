"""OpenRouter's soft performance preferences: `preferred_max_latency` (TTFT, seconds) and
`preferred_min_throughput` (decode tokens per second), each as percentile cutoffs.

Soft as OpenRouter documents them: a pair that misses a cutoff is deprioritised, never
excluded. `prefer()` splits a ranking into three tiers, each kept in its order: the pairs
that meet every cutoff, those whose figures are not measured yet, and those that miss one
(known to miss it, so after the unknown). Pure: reads the candidates' scores only.

Percentiles are the pair's window's, on the "worse" side for both (learning.decode): TTFT
p90 is the time 90% of first tokens came within; throughput p90 is the rate 90% of the
answers reached.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proxy.core.domain import Candidate, Score
from proxy.routing.total import expected_total_s

PERCENTILES = ("p50", "p75", "p90", "p99")
MEETS, UNKNOWN, MISSES = "meets", "unknown", "misses"


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Percentile -> limit, in PERCENTILES order (a number alone is p50's)."""

    limits: tuple[tuple[str, float], ...]

    def text(self, unit: str) -> str:
        return ", ".join(f"{name} {value:g}{unit}" for name, value in self.limits)


@dataclass(frozen=True, slots=True)
class Preferences:
    """One request's performance preferences (None: not given) and its expected output."""

    max_latency: Cutoffs | None = None
    min_throughput: Cutoffs | None = None
    output_tokens: int | None = None  # the request's max_tokens (routing.total)

    def __bool__(self) -> bool:
        return self.max_latency is not None or self.min_throughput is not None


def ttft_at(score: Score, name: str) -> float | None:
    """The window's TTFT percentile `name`; None before a latency observation."""
    return {"p50": score.median, "p75": score.p75, "p90": score.p90, "p99": score.p99}[name]


def throughput_at(score: Score, name: str) -> float | None:
    """The window's decode throughput percentile `name`; None before one is measured."""
    return None if score.throughput is None else score.throughput.percentile(name)


_Figure = Callable[[Score, str], float | None]


def verdict(score: Score, prefs: Preferences) -> str:
    """MEETS every cutoff, MISSES one (a measured figure beyond it), else UNKNOWN."""
    found = MEETS
    checks: tuple[tuple[Cutoffs | None, _Figure, Callable[[float, float], bool]], ...] = (
        (prefs.max_latency, ttft_at, operator.le),
        (prefs.min_throughput, throughput_at, operator.ge),
    )
    for cutoffs, figure, within in checks:
        for name, limit in cutoffs.limits if cutoffs is not None else ():
            value = figure(score, name)
            if value is None:
                found = UNKNOWN
            elif not within(value, limit):
                return MISSES
    return found


def prefer(
    ranked: Sequence[Candidate], prefs: Preferences
) -> tuple[list[Candidate], dict[str, list[str]]]:
    """`ranked` in tiers (meets, unknown, misses), each tier in its order; and the providers
    of each tier."""
    tiers: dict[str, list[Candidate]] = {MEETS: [], UNKNOWN: [], MISSES: []}
    for candidate in ranked:
        tiers[verdict(candidate.score, prefs)].append(candidate)
    names = {tier: [c.provider for c in members] for tier, members in tiers.items()}
    return [*tiers[MEETS], *tiers[UNKNOWN], *tiers[MISSES]], names


def describe(prefs: Preferences, names: dict[str, list[str]]) -> str:
    """'preferred_min_throughput p50 100 tok/s: b meets; a misses (deprioritised)'."""
    asked = []
    if prefs.max_latency is not None:
        asked.append(f"preferred_max_latency {prefs.max_latency.text(' s')}")
    if prefs.min_throughput is not None:
        asked.append(f"preferred_min_throughput {prefs.min_throughput.text(' tok/s')}")
    parts = [f"{', '.join(names[MEETS])} meet it"] if names[MEETS] else []
    if names[UNKNOWN]:
        parts.append(f"{', '.join(names[UNKNOWN])} not measured")
    if names[MISSES]:
        parts.append(f"{', '.join(names[MISSES])} miss it (deprioritised)")
    return f"{' and '.join(asked)}: {'; '.join(parts) or 'no pair'}"


def throughput_order(ranked: Sequence[Candidate]) -> list[Candidate]:
    """`sort: "throughput"`: the highest decode throughput (p50) first, unmeasured pairs
    last; ties keep the measured order."""

    def key(c: Candidate) -> float:
        t = c.score.throughput
        return -t.p50 if t is not None else float("inf")

    return sorted(ranked, key=key)


def throughput_text(ranked: Sequence[Candidate], output_tokens: int | None) -> str:
    """'b 480 tok/s (~0.6 s for 128 tokens), a 21 tok/s (~6.3 s), c unmeasured'."""
    parts = []
    for i, c in enumerate(ranked):
        t = c.score.throughput
        if t is None:
            parts.append(f"{c.provider} unmeasured")
            continue
        total = expected_total_s(c.score, output_tokens)
        tokens = f" for {output_tokens} tokens" if output_tokens is not None and i == 0 else ""
        expect = "" if total is None else f" (~{total:.2g} s{tokens})"
        parts.append(f"{c.provider} {t.p50:.0f} tok/s{expect}")
    return ", ".join(parts)
