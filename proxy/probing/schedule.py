"""Pure: when a pair is probed next, why, and under which lease slot; and which due probes
go first when the budget cannot pay for all of them.

No I/O and no clock of its own (every function takes `now`), so a schedule can be replayed
in a test. The prober (prober.py) calls `plan()` for each pair on every tick and fires the
due probes in `priority()` order while the budget (probing.budget) has room. A model
without client traffic in a large catalog gets `unused_timing()`. docs/probing.md tells
the rules.

Slots: time is cut into slots of a period (the interval for gap filling, the burst spacing
for bursts); slot k of a pair is due at k x period plus an offset within `jitter` x period
that is a hash of (pair, kind, k), so every replica computes the same moment and the lease
of the slot (one per pair and slot, in the store) lets exactly one of them send it.
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from proxy.core.domain import Pair, Sample, Score
from proxy.learning.coldness import last_activity
from proxy.learning.prefill import MIN_LONG
from proxy.settings.policy import ModelPolicy


class Reason(enum.StrEnum):
    BURST = "burst"  # a new or emptied pair, until min_samples
    UNCERTAIN = "uncertain"  # routing asked for evidence about this pair
    KEEP_WARM = "keep-warm"  # the model's chosen pair, before its learned idle-to-cold time
    STANDBY = "standby"  # a pair next in line for failover, before its idle-to-cold time
    PREFILL = "prefill"  # a long prompt: the pair's prefill rate is unknown (learning.prefill)
    STALE = "stale"  # the newest sample is older than stale_after_s: probe at once
    GAP = "gap"  # few recent passive samples: one probe per interval
    SKIPPED = "skipped"  # enough passive traffic (or probing off for the model)
    MANUAL = "manual"  # POST /admin/probe


@dataclass(frozen=True, slots=True)
class Timing:
    """A model's probe times in seconds of this market (policy x prober.time_scale)."""

    interval_s: float
    jitter: float
    burst_spacing_s: float
    stale_after_s: float
    timeout_s: float
    enough_passive: int
    keep_warm: bool
    standby: bool
    margin: float
    idle_to_cold_s: float
    min_idle_s: float
    prefill_interval_s: float
    long_probes: bool
    long_tokens: int = 2000  # a sample this long counts towards a slope (half a long probe)

    @classmethod
    def of(cls, policy: ModelPolicy, time_scale: float) -> Timing:
        p = policy.probe
        return cls(
            interval_s=p.interval_s * time_scale, jitter=p.jitter,
            burst_spacing_s=p.burst_spacing_s * time_scale,
            stale_after_s=p.stale_after_s * time_scale, timeout_s=p.timeout_s * time_scale,
            enough_passive=p.enough_passive,
            keep_warm=p.keep_warm.enabled, standby=p.standby.enabled,
            margin=p.keep_warm.margin,
            idle_to_cold_s=p.keep_warm.idle_to_cold_s * time_scale,
            min_idle_s=p.keep_warm.min_idle_s * time_scale,
            prefill_interval_s=policy.prefill.probe_interval_s * time_scale,
            long_probes=policy.prefill.long_probes,
            long_tokens=policy.prefill.probe_tokens // 2,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """A pair's next probe: why, when (wall clock; None: nothing due) and its lease slot."""

    reason: Reason
    due: float | None
    slot: str | None
    period_s: float  # the slot's length: the lease lives this long
    detail: str


def slot_due(pair: Pair, kind: str, period_s: float, jitter: float, k: int) -> float:
    """When slot `k` of `pair` (of lease kind `kind`) is due: the same on every replica."""
    token = f"{pair.model}\0{pair.provider}\0{kind}{k}".encode()
    share = zlib.crc32(token) / 2**32
    return (k + share * jitter) * period_s


def next_slot(
    pair: Pair, kind: str, period_s: float, jitter: float, now: float, done: Collection[str]
) -> tuple[str, float]:
    """The current slot of `now` unless this replica has already fired it (`done`: the last
    slot fired of each kind), else the next one: (slot name, due time)."""
    k = math.floor(now / period_s)
    if f"{kind}{k}" in done:
        k += 1
    return f"{kind}{k}", slot_due(pair, kind, period_s, jitter, k)


def is_bursting(was_bursting: bool, score: Score | None, min_samples: int) -> bool:
    """A pair bursts from the moment its window is empty until it holds `min_samples`
    attempts (errors count, so a failing pair's burst ends too)."""
    attempts = score.n_attempts if score is not None else 0
    return attempts == 0 or (was_bursting and attempts < min_samples)


@dataclass(frozen=True, slots=True)
class PairView:
    """What `plan()` needs to know about one pair besides its policy."""

    score: Score | None
    window: Sequence[Sample]  # oldest first
    bursting: bool
    is_chosen: bool  # the model's current choice (keep-warm applies to it)
    uncertain: str | None  # why routing wants evidence, or None
    idle_to_cold_s: float | None  # learned from the window, None: not learned yet
    done: Collection[str]  # the last slot this replica fired, of each kind (g, b, k, l)
    local_end: float | None = None  # when this replica's last probe of it ended (before the
    # store and scoreboard show its sample)
    is_standby: bool = False  # next in line for failover while the model has traffic
    wants_prefill: bool = False  # its prefill rate is unknown and the model gets long prompts


def plan(pair: Pair, timing: Timing, view: PairView, now: float) -> Plan:
    """The pair's next probe (`_plan`), or its long probe when that is due first: a pair
    whose prefill rate is unknown while its model gets long prompts is probed with a long
    prompt, beside its other probes: one per burst spacing while its window holds fewer
    than the long samples a slope needs (learning.prefill.MIN_LONG), else once per
    `prefill.probe_interval_s`. One long probe per interval alone would leave a pair that
    gets no long traffic unidentified for MIN_LONG intervals (an hour and a half by
    default), ranked meanwhile with the slope of the pairs that have one."""
    planned = _plan(pair, timing, view, now)
    if not (timing.long_probes and view.wants_prefill):
        return planned
    why = "prefill rate unknown and the model gets long prompts"
    have = sum(sample.prompt_tokens >= timing.long_tokens for sample in view.window)
    if have < MIN_LONG:
        long = _slotted(pair, Reason.PREFILL, "lb", timing.burst_spacing_s, timing, view, now,
                        f"{why}: {have} of the {MIN_LONG} long samples a slope needs")  # fmt: skip
    else:  # not again in the slot of the newest long sample (the burst's last probe)
        period = timing.prefill_interval_s
        newest = max(x.timestamp for x in view.window if x.prompt_tokens >= timing.long_tokens)
        done = {*view.done, f"l{math.floor(newest / period)}"}
        slot, due = next_slot(pair, "l", period, timing.jitter, now, done)
        long = Plan(Reason.PREFILL, due, slot, period, why)
    return _earliest([planned, long])


def _plan(pair: Pair, timing: Timing, view: PairView, now: float) -> Plan:
    """The earliest due of the reasons that apply (ties in Reason's order). Enough passive
    samples within the last interval rule out gap and stale probes; so do burst, uncertain
    and keep-warm, which probe more often than they would. Burst and uncertain share their
    slots (kind "b", one per burst spacing): a pair both bursting and wanted by routing is
    probed once per slot, not once per reason."""
    options: list[Plan] = []
    if view.bursting:
        options.append(_slotted(pair, Reason.BURST, "b", timing.burst_spacing_s, timing, view,
                                now, "fewer attempts than min_samples"))  # fmt: skip
    elif view.uncertain is not None:
        options.append(_slotted(pair, Reason.UNCERTAIN, "b", timing.burst_spacing_s, timing,
                                view, now, view.uncertain))  # fmt: skip
    warm = _keep_warm(timing, view)
    if warm is not None:
        options.append(warm)
    if options:  # each probes more often than gap filling would: they replace it
        return _earliest(options)
    passive = recent_passive(view.window, now - timing.interval_s)
    counted = f"{passive} passive samples in the last {timing.interval_s:.3g} s"
    if passive >= timing.enough_passive:
        return Plan(Reason.SKIPPED, None, None, timing.interval_s, counted)
    else:
        age = view.score.age_s(now) if view.score is not None else None
        if age is not None and age > timing.stale_after_s:
            # at once, unless this slot was fired already: then at the next slot's time
            slot, due = next_slot(pair, "g", timing.interval_s, timing.jitter, now, view.done)
            at = now if slot == f"g{math.floor(now / timing.interval_s)}" else due
            options.append(Plan(Reason.STALE, at, slot, timing.interval_s,
                                f"newest sample {age:.3g} s old"))  # fmt: skip
        else:
            options.append(
                _slotted(pair, Reason.GAP, "g", timing.interval_s, timing, view, now, counted)
            )
    return _earliest(options)


REASON_ORDER = list(Reason)


def _earliest(options: list[Plan]) -> Plan:
    return min(options, key=lambda p: (p.due if p.due is not None else math.inf,
                                       REASON_ORDER.index(p.reason)))  # fmt: skip


def _slotted(
    pair: Pair, reason: Reason, kind: str, period_s: float, timing: Timing, view: PairView,
    now: float, detail: str,
) -> Plan:  # fmt: skip
    slot, due = next_slot(pair, kind, period_s, timing.jitter, now, view.done)
    return Plan(reason, due, slot, period_s, detail)


def _keep_warm(timing: Timing, view: PairView) -> Plan | None:
    """Keep-warm for the chosen pair (off by default) and warm standby for the pairs next in
    line (on by default): due once the pair has been idle for the spacing."""
    if timing.keep_warm and view.is_chosen:
        reason = Reason.KEEP_WARM
    elif timing.standby and view.is_standby:
        reason = Reason.STANDBY
    else:
        return None
    spacing = keep_warm_spacing(timing, view.idle_to_cold_s)
    last_seen = last_activity(view.window)
    if view.local_end is not None:
        last_seen = max(last_seen or view.local_end, view.local_end)
    if last_seen is None or spacing >= timing.interval_s:
        return None
    due = last_seen + spacing
    k = math.floor(due / spacing)
    if f"k{k}" in view.done:
        k += 1
        due = max(due, k * spacing)
    learned = "learned" if view.idle_to_cold_s is not None else "assumed"
    idle = view.idle_to_cold_s if view.idle_to_cold_s is not None else timing.idle_to_cold_s
    detail = f"idle-to-cold {idle:.3g} s ({learned}): probe after {spacing:.3g} s idle"
    return Plan(reason, due, f"k{k}", spacing, detail)


def keep_warm_spacing(timing: Timing, learned_s: float | None) -> float:
    """How long the chosen pair may stay idle: margin x idle-to-cold, at least min_idle_s."""
    idle = learned_s if learned_s is not None else timing.idle_to_cold_s
    return max(timing.min_idle_s, timing.margin * idle)


def recent_passive(window: Sequence[Sample], since: float) -> int:
    count = 0
    for sample in reversed(window):
        if sample.timestamp < since:
            break
        count += sample.is_traffic
    return count


# -- demand: which probes the budget pays for first ---------------------------------------

DECIDING, USED_GAP, UNUSED = 0, 1, 2  # priority tiers, first to last


def priority(reason: Reason, used: bool, measured_at: float | None) -> tuple[int, float]:
    """The order in which a tick fires due probes, first first: a model with client traffic
    (`used`) before one without; among a used model's pairs, the probes that change
    decisions (burst, uncertain, keep-warm, standby, prefill, stale) before gap filling;
    within a tier the pair measured longest ago first (`measured_at`: its newest sample,
    None: never), so that a budget too small for all of them still goes round every pair of
    the tier."""
    since = -math.inf if measured_at is None else measured_at
    if not used:
        return UNUSED, since
    return (USED_GAP if reason is Reason.GAP else DECIDING), since


def unused_timing(timing: Timing, interval_s: float) -> Timing:
    """A model without client traffic in a large catalog: its pairs get gap probes once per
    `interval_s` (scaled), the slot's moment anywhere in it (jitter 1: spread evenly, not
    bunched at the start of each interval), and are probed at once when older than that; no
    keep-warm, standby or long probes (the caller also turns bursts and routing's wishes
    off)."""
    return replace(
        timing, interval_s=max(timing.interval_s, interval_s), jitter=1.0,
        stale_after_s=max(timing.stale_after_s, interval_s), keep_warm=False, standby=False,
        long_probes=False,
    )  # fmt: skip


GAP_SHARE = 0.9  # gap filling may plan on this share of its budget; the rest: bursts & co


def stretch(demand_per_hour: float, supply_per_hour: float) -> float:
    """By how much gap intervals grow so that gap probes wanted at `demand_per_hour` fit
    `supply_per_hour`: 1 when they fit, else the ratio rounded up to a quarter (replicas
    seeing the same demand compute the same slots). A budget spent in the first minutes of
    its hour would leave every pair unmeasured for the rest of it; stretched, each pair is
    probed evenly, less often."""
    if demand_per_hour <= supply_per_hour or supply_per_hour <= 0:
        return 1.0
    return math.ceil(demand_per_hour / supply_per_hour * 4) / 4


def gap_stretch(
    rates: Sequence[tuple[float, float]], max_probes: int, max_cost_usd: float, share: float
) -> float:
    """`stretch` for pairs wanting gap probes, `rates` (probes per hour, USD a probe) of each,
    planning on `share` of the budget's caps (per hour): the probes' count and cost."""
    demand = sum(rate for rate, _ in rates)
    usd = sum(rate * cost for rate, cost in rates)
    supply = max_probes * share
    if usd > 0:  # the cost cap, in probes of these pairs' mean cost
        supply = min(supply, max_cost_usd * share * demand / usd)
    return stretch(demand, supply)


def stretched(timing: Timing, factor: float) -> Timing:
    """`timing` with its gap interval `factor` times longer (stale follows: never due before
    the stretched slot)."""
    if factor == 1.0:
        return timing
    interval = timing.interval_s * factor
    stale = max(timing.stale_after_s, interval * (1 + timing.jitter))
    return replace(timing, interval_s=interval, stale_after_s=stale)


def kept_share(unused_pairs: int, interval_s: float, window_s: float, max_probes: int,
               share: float) -> float:  # fmt: skip
    """The share of the budget kept for models without traffic: what their `unused_pairs`
    need at one probe per `interval_s` in a window of `window_s`, at most `share` (models
    with traffic may spend the rest, not this)."""
    if unused_pairs == 0 or max_probes <= 0:
        return 0.0
    return min(share, unused_pairs * window_s / interval_s / max_probes)
