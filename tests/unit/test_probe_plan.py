"""The probe schedule (pure): reasons, slots, time scaling, idle-to-cold learning."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxy.core.domain import Outcome, Pair, Sample, Source
from proxy.learning.coldness import learn_idle_to_cold
from proxy.learning.stats import compute_score
from proxy.probing.runner import long_prompt
from proxy.probing.schedule import (
    PairView,
    Reason,
    Timing,
    gap_stretch,
    is_bursting,
    kept_share,
    plan,
    priority,
    slot_due,
    stretch,
    stretched,
    unused_timing,
)
from proxy.settings.policy import ModelPolicy, Probe

PAIR = Pair("m", "p")
NOW = 1_000_000.0
TIMING = Timing.of(ModelPolicy(), 1.0)


def sample(
    ts: float, ttft_s: float = 0.3, source: Source = Source.PROBE, tokens: int = 0
) -> Sample:
    return Sample("m", "p", Outcome.OK, ttft_s, ts, total_s=ttft_s, source=source,
                  prompt_tokens=tokens)  # fmt: skip


def view(window: Sequence[Sample], **kw: object) -> PairView:
    policy = ModelPolicy()
    score = compute_score(PAIR, window, policy.window_params(), NOW) if window else None
    fields: dict[str, object] = {
        "score": score, "window": window, "bursting": False, "is_chosen": False,
        "uncertain": None, "idle_to_cold_s": None, "done": (), **kw,
    }  # fmt: skip
    if isinstance(fields["done"], str):  # one slot fired
        fields["done"] = {fields["done"]}
    return PairView(**fields)  # type: ignore[arg-type]


def test_every_time_setting_scales_with_the_market() -> None:
    policy = ModelPolicy(probe=Probe(interval_s=100, burst_spacing_s=4, stale_after_s=500))
    scaled = Timing.of(policy, 0.01)
    assert (scaled.interval_s, scaled.burst_spacing_s, scaled.stale_after_s) == (1.0, 0.04, 5.0)
    assert scaled.timeout_s == pytest.approx(1.2)  # 120 s default
    assert scaled.idle_to_cold_s == pytest.approx(3.0) and scaled.min_idle_s == 0.2


def test_slots_are_the_same_on_every_replica_and_inside_their_jitter() -> None:
    dues = [slot_due(PAIR, "g", 120.0, 0.2, k) for k in range(100, 200)]
    assert dues == [slot_due(PAIR, "g", 120.0, 0.2, k) for k in range(100, 200)]
    for k, due in zip(range(100, 200), dues, strict=True):
        assert k * 120.0 <= due < k * 120.0 + 0.2 * 120.0
    assert len({round(d % 120.0, 3) for d in dues}) > 50  # spread, not one fixed offset


def test_a_new_pair_bursts_until_min_samples_then_fills_gaps() -> None:
    assert is_bursting(False, None, 20)  # new
    burst = plan(PAIR, TIMING, view([], bursting=True), NOW)
    assert burst.reason is Reason.BURST and burst.slot and burst.slot.startswith("b")
    assert burst.period_s == TIMING.burst_spacing_s
    window = [sample(NOW - 100 + i) for i in range(20)]
    score = compute_score(PAIR, window, ModelPolicy().window_params(), NOW)
    assert not is_bursting(True, score, 20)
    gap = plan(PAIR, TIMING, view(window), NOW)
    assert gap.reason is Reason.GAP and gap.slot and gap.slot.startswith("g")
    assert gap.period_s == TIMING.interval_s


def test_enough_recent_passive_samples_mean_no_probe() -> None:
    passive = [sample(NOW - 10 * i, source=Source.PASSIVE) for i in range(5, 0, -1)]
    skipped = plan(PAIR, TIMING, view(passive), NOW)
    assert skipped.reason is Reason.SKIPPED and skipped.due is None
    assert "5 passive samples" in skipped.detail
    few = passive[-2:]
    assert plan(PAIR, TIMING, view(few), NOW).reason is Reason.GAP


def test_a_stale_pair_is_probed_at_once_once_per_slot() -> None:
    old = [sample(NOW - 1000 + i, source=Source.PASSIVE) for i in range(50)]
    stale = plan(PAIR, TIMING, view(old), NOW)
    assert stale.reason is Reason.STALE and stale.due == NOW
    again = plan(PAIR, TIMING, view(old, done=stale.slot), NOW)
    assert again.due is not None and again.due > NOW and again.slot != stale.slot


def test_a_fired_slot_moves_the_plan_to_the_next() -> None:
    window = [sample(NOW - 100 + i) for i in range(20)]
    first = plan(PAIR, TIMING, view(window), NOW)
    after = plan(PAIR, TIMING, view(window, done=first.slot), NOW)
    assert after.slot != first.slot and after.due is not None and first.due is not None
    assert after.due > first.due


def test_uncertain_pairs_are_probed_at_the_burst_spacing() -> None:
    window = [sample(NOW - 100 + i) for i in range(20)]
    wanted = plan(PAIR, TIMING, view(window, uncertain="overlaps the leader"), NOW)
    assert wanted.reason is Reason.UNCERTAIN and wanted.detail == "overlaps the leader"


def test_keep_warm_probes_the_chosen_pair_before_its_learned_idle_to_cold_time() -> None:
    timing = Timing.of(ModelPolicy.model_validate({"probe": {"keep_warm": {"enabled": True}}}), 1)
    window = [sample(NOW - 100 + i) for i in range(20)]
    warm = plan(PAIR, timing, view(window, is_chosen=True, idle_to_cold_s=80.0), NOW)
    assert warm.reason is Reason.KEEP_WARM and warm.period_s == 40.0  # max(20, 0.5 x 80)
    assert warm.due == pytest.approx(NOW - 100 + 19 + 0.3 + 40.0)
    assert plan(PAIR, timing, view(window, idle_to_cold_s=80.0), NOW).reason is Reason.GAP
    assert plan(PAIR, TIMING, view(window, is_chosen=True), NOW).reason is Reason.GAP  # off


def test_idle_to_cold_is_the_shortest_cold_idle_beyond_every_warm_one() -> None:
    t = 0.0
    window = []
    steps = [
        (0, 0.3),
        (5, 0.3),
        (10, 0.3),
        (0.001, 20.0),
        (40, 20.0),
        (30, 0.3),
        (1, 0.3),
        (90, 20.0),
        (2, 0.3),
        (3, 0.3),
        (50, 20.0),
        (1, 0.3),
        (1, 0.3),
    ]
    for idle, ttft in steps:
        t += idle
        window.append(sample(t, ttft))
        t += ttft
    # warm after 30 s idle; cold after 0.001 s (chance), 40 s, 50 s and 90 s: learned 40
    assert learn_idle_to_cold(window, 4.0, 2.0) == pytest.approx(40.0)
    assert learn_idle_to_cold(window[:3], 4.0, 2.0) is None


def test_a_pair_of_unknown_prefill_rate_gets_a_long_probe_beside_its_gap_probes() -> None:
    """Until its window holds the 3 long samples a slope needs, the long probe's slot comes
    every burst spacing; from then on every 1800 s (`prefill.probe_interval_s`), beside the
    gap (or stale) slots every `interval_s` (120 s): whichever is due first. Without the
    want (or with long probes off), no long probe."""
    short = [sample(NOW - 3000 + 200 * i) for i in range(10)]  # quiet: gap probing
    longs_fired = fire_each_second(short, seconds=300)
    assert len(longs_fired) >= 300 / TIMING.burst_spacing_s - 2, longs_fired
    longs = [sample(NOW - 2900 + 200 * i, tokens=4000) for i in range(3)]
    window = sorted(short + longs, key=lambda s: s.timestamp)
    slots = set()
    for k in range(40):  # a market hour in 90 s steps
        now = NOW + 90 * k
        planned = plan(PAIR, TIMING, view(window, wants_prefill=True), now)
        if planned.due is not None and planned.due <= now + 90:
            slots.add((planned.reason, planned.slot))
    kinds = {reason for reason, _ in slots}
    assert Reason.PREFILL in kinds and kinds - {Reason.PREFILL} <= {Reason.GAP, Reason.STALE}
    assert sum(1 for reason, _ in slots if reason is Reason.PREFILL) <= 3  # one per 1800 s
    off = Timing.of(ModelPolicy.model_validate({"prefill": {"long_probes": False}}), 1.0)
    assert plan(PAIR, off, view(window, wants_prefill=True), NOW).reason is not Reason.PREFILL
    assert plan(PAIR, TIMING, view(window), NOW).reason is not Reason.PREFILL


def test_a_long_probe_prompt_has_about_the_size_asked_and_is_new_each_time() -> None:
    first, second = long_prompt(4000), long_prompt(4000)
    assert first != second
    assert abs(len(first) / 4 - 4000) < 50  # 4 bytes a token, as the proxy estimates them


def fire_each_second(window: list[Sample], seconds: int) -> list[str]:
    """Fire every due plan of a pair of unknown prefill rate for `seconds`, its samples not
    added to the window (as if they never arrived); the long probes' slots fired."""
    done: dict[str, str] = {}
    longs = []
    for t in range(seconds):
        planned = plan(PAIR, TIMING, view(window, wants_prefill=True, done=set(done.values())),
                       NOW + t)  # fmt: skip
        if planned.due is not None and planned.due <= NOW + t and planned.slot is not None:
            done[planned.slot.rstrip("0123456789-")] = planned.slot
            if planned.reason is Reason.PREFILL:
                longs.append(planned.slot)
    return longs


def test_firing_what_is_due_each_tick_sends_each_slot_once() -> None:
    """The prober's loop, in miniature: every second, fire the plan if it is due and
    remember the slot fired per kind. A long probe and the gap probes take turns without
    firing a slot twice (one shared 'last slot fired' re-fired the gap slot after each
    long probe and the long one after each gap probe: a storm)."""
    window = [sample(NOW - 3000 + 200 * i) for i in range(10)]
    done: dict[str, str] = {}
    fired: list[tuple[Reason, str]] = []
    for t in range(3600):
        now = NOW + t
        planned = plan(
            PAIR, TIMING, view(window, wants_prefill=True, done=frozenset(done.values())), now
        )
        if planned.due is not None and planned.due <= now and planned.slot is not None:
            fired.append((planned.reason, planned.slot))
            done[planned.slot.rstrip("0123456789-")] = planned.slot
            tokens = 4000 if planned.reason is Reason.PREFILL else 0
            window = [*window, sample(now, tokens=tokens)]  # its sample, failed or not
    assert len(fired) == len(set(slot for _, slot in fired))  # no slot twice
    longs = [slot for reason, slot in fired if reason is Reason.PREFILL]
    assert 3 <= len(longs) <= 3 + 2, longs  # the 3 a slope needs, then one per 1800 s
    assert all(slot.startswith("lb") for slot in longs[:3])
    assert len(fired) <= 3600 / 120 + 3 + 5, fired  # the gap slots, a stale one, the long ones


def test_due_probes_go_used_decisions_first_then_used_gaps_then_unused_oldest_first() -> None:
    ranks = {
        "unused, never measured": priority(Reason.GAP, False, None),
        "unused, old": priority(Reason.STALE, False, NOW - 9000),
        "used gap, old": priority(Reason.GAP, True, NOW - 500),
        "used gap, recent": priority(Reason.GAP, True, NOW - 100),
        "used burst": priority(Reason.BURST, True, NOW - 10),
        "used standby": priority(Reason.STANDBY, True, NOW - 50),
    }
    assert sorted(ranks, key=ranks.__getitem__) == [
        "used standby", "used burst", "used gap, old", "used gap, recent",
        "unused, never measured", "unused, old",
    ]  # fmt: skip


def test_gap_intervals_stretch_to_the_budget_and_unused_pairs_spread_over_hours() -> None:
    assert stretch(300.0, 450.0) == 1.0
    assert stretch(1800.0, 405.0) == 4.5  # 4.44 rounded up to a quarter
    rates = [(30.0, 0.0001)] * 60  # 60 pairs, 30 gap probes an hour each
    assert gap_stretch(rates, 600, 1.0, 0.75) == 4.0  # 1800 against 450 probes
    assert gap_stretch(rates, 600, 0.018, 0.75) == 13.5  # the cost cap: 135 probes an hour
    assert stretched(TIMING, 4.0).stale_after_s == 600.0  # 1.2 x 480 s: the policy's is later
    longer = stretched(TIMING, 8.0)
    assert longer.interval_s == 960.0 and longer.stale_after_s == pytest.approx(1152.0)
    assert longer.burst_spacing_s == TIMING.burst_spacing_s
    rare = unused_timing(TIMING, 21600.0)
    assert (rare.interval_s, rare.stale_after_s, rare.jitter) == (21600.0, 21600.0, 1.0)
    assert not (rare.keep_warm or rare.standby or rare.long_probes)
    assert kept_share(1920, 21600.0, 3600.0, 600, 0.25) == 0.25  # they need 320 of 600
    assert kept_share(40, 21600.0, 3600.0, 600, 0.25) == pytest.approx(40 / 6 / 600)
    assert kept_share(0, 21600.0, 3600.0, 600, 0.25) == 0.0
