"""Scheduled probes of every pair: one streamed request through the same upstream and clock.

Owns the probe loop of this replica: on every tick it plans each pair (probing.schedule.plan),
orders the probes that are due (schedule.priority: models with client traffic first) and
fires those the budget seems to hold. Each fired probe is a task of its own: it spends the
fleet's budget in the store (probing.budget; this replica's share while the store is down),
takes the pair's lease for the slot (so that replicas sharing the store send one probe per
slot, not one each), sends it and puts the sample (source=probe) into the same buffer as
real traffic, so it enters the same windows and scores; then settles the probe's cost, or
refunds it when another replica held the slot. Each pair has at most one probe in flight: a
90 s cold start holds up no other pair. Does not route and never touches a client's
request. docs/probing.md tells the whole design.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from proxy.core.domain import Pair, Sample, Score
from proxy.core.errors import TtftRouterError
from proxy.core.loops import pause
from proxy.learning.coldness import learn_idle_to_cold
from proxy.learning.prefill import size_class
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.base import Store, StoreUnavailable
from proxy.learning.store.buffer import SampleBuffer
from proxy.probing.budget import ProbeBudget, Refusal, Ticket
from proxy.probing.runner import ProbeRunner
from proxy.probing.schedule import (
    GAP_SHARE,
    PairView,
    Plan,
    Reason,
    Timing,
    gap_stretch,
    is_bursting,
    kept_share,
    plan,
    priority,
    stretched,
    unused_timing,
)
from proxy.routing import Routing
from proxy.settings.config import Config
from proxy.settings.policy import ModelPolicy, PolicyHolder, Probe
from proxy.telemetry.metrics import Metrics

log = logging.getLogger("ttft_router.prober")

HOUR_S = 3600.0
LONG_CLASS = 2  # learning.prefill's size class of 2k-8k tokens: "long prompts" from here
MIN_TICK_S = 0.01
READ_EVERY = 1 / 360  # of the budget's window: the use seen is read again after 10 s an hour


@dataclass(slots=True)
class PairState:
    """What this replica knows of one pair's probing (the shared part is in the store)."""

    bursting: bool = True
    in_flight: bool = False
    done: dict[str, str] = field(default_factory=dict)  # kind -> the last slot fired here
    plan: Plan | None = None
    pooled: bool = False  # a model without traffic in a large catalog (its plan, its spends)
    last: Sample | None = None
    last_reason: Reason | None = None
    last_error: str | None = None
    lease_holder: str | None = None
    probes: int = 0
    cost_usd: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _end_of(sample: Sample | None) -> float | None:
    if sample is None:
        return None
    return sample.timestamp + (sample.total_s or 0.0)


class Prober:
    def __init__(
        self,
        config: Config,
        policies: PolicyHolder,
        scoreboard: Scoreboard,
        routing: Routing,
        runner: ProbeRunner,
        buffer: SampleBuffer,
        store: Store,
        metrics: Metrics,
    ) -> None:
        """`routing` advises which pairs want evidence (routing.advice) and names each
        model's choice (keep-warm); `runner` sends one probe; the sample goes into `buffer`
        like a real request's; `store` holds the leases replicas share."""
        self._config = config
        self.settings = config.prober
        self._policies = policies
        self._scoreboard = scoreboard
        self._routing = routing
        self._runner = runner
        self._buffer = buffer
        self.store = store
        self._metrics = metrics
        self.replica = runner.replica
        self.pricing = runner.pricing
        self.time_scale = self.settings.time_scale
        self.budget = ProbeBudget(self.settings, store, self.replica, HOUR_S * self.time_scale,
                                  runner.redact)  # fmt: skip
        self.paused_because: str | None = None
        self._paused_estimate = 0.0  # USD of the probe refused last
        self.coordination_error: str | None = None
        self._slots = asyncio.Semaphore(self.settings.max_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.upstream_models = {
            Pair(model, provider): upstream_model
            for model, entry in config.models.items()
            for provider, upstream_model in entry.providers.items()
        }
        self.states = {pair: PairState() for pair in self.upstream_models}
        # a large catalog: models without traffic get unused_timing and share a part of the
        # budget (below full_schedule_pairs every model gets its full schedule)
        self.large_catalog = len(self.states) > self.settings.full_schedule_pairs
        self.used_models: frozenset[str] = frozenset()  # as of the last tick
        self.gap_stretch = 1.0  # gap intervals x this: the budget's pace (schedule.stretch)
        self.unused_stretch = 1.0  # the unused interval x this, likewise
        self._estimates: dict[Pair, tuple[Probe, float]] = {}  # pair -> (its probe policy, USD)
        self._never_fits: set[tuple[Pair, Reason]] = set()  # warned once: dearer than a cap
        # per scores snapshot: model -> whether its clients sent long prompts
        self._long_seen: tuple[object, dict[str, bool]] = (None, {})
        self._learned: dict[Pair, tuple[tuple[float, float, int, int], float | None]] = {}

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Plan and fire due probes every tick until `stop`; then cancel probes in flight."""
        tick = max(MIN_TICK_S, self.settings.tick_s * self.time_scale)
        try:
            while not stop.is_set():
                try:
                    await self.prepare()
                    self.tick(time.time())
                except Exception:  # a bug: say so, and keep probing at the next tick
                    log.exception("prober tick failed unexpectedly")
                if await pause(stop, tick):
                    break
        finally:
            if self.tasks:
                log.info("prober stopping: cancelling %d probes in flight", len(self.tasks))
                for task in list(self.tasks):
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)

    def tick(self, now: float) -> None:
        """Plan every pair at `now`; fire the due probes, first by `priority`, while the
        budget seems to hold them (the probe's task spends it in the store)."""
        self.used_models = self._used(now)
        self._share_for_unused()
        self._pace()
        self._resume_if_room()
        due: list[tuple[tuple[int, float], Pair, PairState, Plan]] = []
        for pair, state in self.states.items():
            state.pooled = self.large_catalog and pair.model not in self.used_models
            state.plan = self._plan(pair, state, now)
            when = state.plan.due
            if state.in_flight or when is None or when > now or state.plan.slot is None:
                continue
            rank = priority(state.plan.reason, pair.model in self.used_models, self._measured(pair))
            due.append((rank, pair, state, state.plan))
        due.sort(key=lambda d: d[0])
        for _, pair, state, planned in due:
            estimate = self._estimate_usd(pair, planned.reason)
            refusal = self.budget.check(state.pooled, estimate)
            if refusal is not None:
                if refusal.pauses:
                    self._pause(refusal.why, estimate)
                elif refusal.never_fits and (pair, planned.reason) not in self._never_fits:
                    self._never_fits.add((pair, planned.reason))
                    log.warning("probe of %s (%s) never fits the budget: %s", pair,
                                planned.reason, refusal.why)  # fmt: skip
                continue
            self._fire(pair, state, planned, estimate)

    def _fire(self, pair: Pair, state: PairState, planned: Plan, estimate: float) -> None:
        assert planned.slot is not None
        self.budget.hold(state.pooled, estimate)
        state.in_flight = True
        kind = planned.slot.rstrip("0123456789-")
        before = state.done.get(kind)
        state.done[kind] = planned.slot
        task = asyncio.create_task(
            self._scheduled(pair, state, planned, estimate, (kind, before)), name="probe"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _measured(self, pair: Pair) -> float | None:
        """When the pair's newest sample was taken (this replica's last probe included)."""
        score = self._scoreboard.snapshot.get(pair)
        newest = score.newest_ts if score is not None else None
        mine = _end_of(self.states[pair].last)
        if mine is None or (newest is not None and newest >= mine):
            return newest
        return mine

    def _used(self, now: float) -> frozenset[str]:
        """The models with a client request measured within `prober.used_within_s`."""
        within = self.settings.used_within_s
        return frozenset(m for m in self._config.models if self._has_traffic(m, within, now))

    def _share_for_unused(self) -> None:
        """Keep the part of the budget the unused models' pairs need (at most unused_share)."""
        if not self.large_catalog or not self.settings.enabled:
            self.budget.kept = 0.0
            return
        unused = sum(1 for pair in self.states if pair.model not in self.used_models)
        self.budget.kept = kept_share(
            unused, self.settings.unused_interval_s, HOUR_S, self.settings.max_probes_per_hour,
            self.settings.unused_share,
        )  # fmt: skip

    def _pace(self) -> None:
        """Stretch the gap intervals to what the budget pays for, from the last tick's plans:
        the pairs of used models (in a small catalog, every pair) filling gaps, on what is
        not kept for the unused; the unused models' pairs, on their share."""
        gaps: list[tuple[float, float]] = []
        unused: list[tuple[float, float]] = []
        per_unused = HOUR_S / self.settings.unused_interval_s
        for pair, state in self.states.items():
            if state.pooled:
                unused.append((per_unused, self._estimate_usd(pair)))
            elif state.plan is not None and state.plan.reason in (Reason.GAP, Reason.STALE):
                rate = HOUR_S / self.policy(pair.model).probe.interval_s
                gaps.append((rate, self._estimate_usd(pair)))
        settings = self.settings
        caps = self.budget.caps(self.budget.shared)  # the local share while the store is down
        self.gap_stretch = gap_stretch(gaps, *caps, (1.0 - self.budget.kept) * GAP_SHARE)
        self.unused_stretch = gap_stretch(unused, *caps, settings.unused_share)

    def _plan(self, pair: Pair, state: PairState, now: float) -> Plan:
        policy = self._policies.current.for_model(pair.model)
        timing = Timing.of(policy, self.time_scale)
        if not policy.probe.enabled or not self.settings.enabled:
            off = "off in the config" if not self.settings.enabled else "off in the policy"
            return Plan(Reason.SKIPPED, None, None, timing.interval_s, f"probing {off}")
        if state.pooled:  # no bursts, no routing's wishes: one probe per unused interval
            every = self.settings.unused_interval_s * self.unused_stretch * self.time_scale
            timing = unused_timing(timing, every)
            view = PairView(
                score=self._scoreboard.snapshot.get(pair), window=self._scoreboard.window(pair),
                bursting=False, is_chosen=False, uncertain=None, idle_to_cold_s=None,
                done=frozenset(state.done.values()), local_end=_end_of(state.last),
            )  # fmt: skip
            return plan(pair, timing, view, now)
        timing = stretched(timing, self.gap_stretch)
        score = self._scoreboard.snapshot.get(pair)
        evidence = self._routing.evidence(pair.model, now)
        state.bursting = is_bursting(state.bursting, score, policy.min_samples) and (
            pair.provider not in evidence.settled
        )
        window = self._scoreboard.window(pair)
        uncertain = evidence.reasons().get(pair.provider)
        is_chosen = self.is_chosen(pair)
        is_standby = (
            timing.standby
            and pair.provider in evidence.standby
            and self._has_traffic(pair.model, policy.probe.standby.traffic_s, now)
        )
        learning = (timing.keep_warm and is_chosen) or is_standby  # walk the window then only
        view = PairView(
            score=score, window=window, bursting=state.bursting, is_chosen=is_chosen,
            uncertain=uncertain, done=frozenset(state.done.values()), local_end=_end_of(state.last),
            idle_to_cold_s=self.idle_to_cold_s(pair, policy) if learning else None,
            is_standby=is_standby, wants_prefill=self._wants_prefill(pair, score),
        )  # fmt: skip
        return plan(pair, timing, view, now)

    def _wants_prefill(self, pair: Pair, score: Score | None) -> bool:
        """The pair's prefill rate is unknown (its samples' sizes do not fix it) while the
        model's clients send long prompts (a size class of 2k tokens or more). Only client
        traffic counts: the long probes' own samples would keep them going."""
        if score is None or score.prefill is None or score.prefill.identified:
            return False
        return self._gets_long_prompts(pair.model)

    def _gets_long_prompts(self, model: str) -> bool:
        """Whether a client request of `model` in the routing windows had a long prompt;
        read once per scores snapshot."""
        snapshot = self._scoreboard.snapshot
        if self._long_seen[0] is not snapshot:
            self._long_seen = (snapshot, {})
        known = self._long_seen[1]
        found = known.get(model)
        if found is None:
            found = known[model] = any(
                s.is_traffic and size_class(s.prompt_tokens) >= LONG_CLASS
                for provider in self._config.models[model].providers
                for s in self._scoreboard.window(Pair(model, provider))
            )
        return found

    def _has_traffic(self, model: str, within_s: float, now: float) -> bool:
        """Whether a client request of `model` was measured within `within_s` (scaled)."""
        since = now - within_s * self.time_scale
        for provider in self._config.models[model].providers:
            for sample in reversed(self._scoreboard.window(Pair(model, provider))):
                if sample.timestamp < since:
                    break
                if sample.is_traffic:
                    return True
        return False

    def is_chosen(self, pair: Pair) -> bool:
        """The pair is its model's current choice (keep-warm applies to it)."""
        incumbent = self._routing.incumbent(pair.model)
        if incumbent is not None:
            return incumbent == pair.provider
        providers = self._config.models[pair.model].providers
        return len(providers) == 1  # one provider: it is the choice

    def idle_to_cold_s(self, pair: Pair, policy: ModelPolicy) -> float | None:
        """Learned from the policy's window of the pair; recomputed only when the window's
        ends or length moved, or the policy changed."""
        window = self._scoreboard.window(pair)
        ends = (window[0].timestamp, window[-1].timestamp) if window else (0.0, 0.0)
        key = (*ends, len(window), id(policy))
        cached = self._learned.get(pair)
        if cached is not None and cached[0] == key:
            return cached[1]
        learned = learn_idle_to_cold(
            window[-policy.window.max_samples :], policy.cold_start.factor,
            policy.cold_start.floor_s,
        )  # fmt: skip
        self._learned[pair] = (key, learned)
        return learned

    # -- budget -------------------------------------------------------------------------

    def _estimate_usd(self, pair: Pair, reason: Reason | None = None) -> float:
        """A probe's cost before it is sent; a long probe's (`Reason.PREFILL`) at its own
        prompt size: it costs dozens of short ones."""
        policy = self._policies.current.for_model(pair.model)
        if reason is Reason.PREFILL:
            return self._runner.estimate_usd(
                pair, self.upstream_models[pair], policy.probe, policy.prefill.probe_tokens
            )
        known = self._estimates.get(pair)
        if known is not None and known[0] is policy.probe:
            return known[1]
        usd = self._runner.estimate_usd(pair, self.upstream_models[pair], policy.probe)
        self._estimates[pair] = (policy.probe, usd)
        return usd

    async def prepare(self) -> None:
        """Before a tick: refresh the budget's use while paused (to see it free up, and
        resume), before anything was seen, and when the use seen is older than
        READ_EVERY of the budget's window (a part refused locally sends no spend that would
        show it free up)."""
        age = self.budget.age_s()
        fresh = age is not None and age < self.budget.window_s * READ_EVERY
        if self.paused_because is None and fresh:
            return
        await self.budget.read()
        self._resume_if_room()

    def _pause(self, why: str, estimate: float) -> None:
        """A probe estimated at `estimate` USD was refused: paused until one would fit."""
        if self.paused_because is None:
            log.warning("prober paused at its budget: %s", why)
        self.paused_because = why
        self._paused_estimate = estimate

    def _resume_if_room(self) -> None:
        """Resume once the probe refused last would fit the use seen (not at once when only a
        cheaper one would: one warning per pause, one info per resume)."""
        paused = self.paused_because is not None
        if paused and self.budget.check(False, self._paused_estimate) is None:
            self._resume()

    def _resume(self) -> None:
        if self.paused_because is not None:
            log.info("prober resumed: the budget has room again")
            self.paused_because = None

    # -- one probe ----------------------------------------------------------------------

    async def _scheduled(
        self, pair: Pair, state: PairState, planned: Plan, estimate: float,
        done: tuple[str, str | None],
    ) -> None:  # fmt: skip
        try:
            spent = await self.budget.spend(pair.model, state.pooled, estimate)
            if isinstance(spent, Refusal):  # the slot is not spent: try it again later
                kind, before = done
                if before is None:
                    state.done.pop(kind, None)
                else:
                    state.done[kind] = before
                if spent.pauses:
                    self._pause(spent.why, estimate)
                return
            self._resume_if_room()
            holder = await self._lease(pair, planned)
            state.lease_holder = holder
            if holder != self.replica and not holder.endswith("(store unavailable)"):
                await self.budget.refund(spent)
                return  # another replica has this slot
            async with self._slots:
                await self._probe(pair, state, planned.reason, spent)
        except Exception:  # a bug, not a provider's failure (those are samples): say so
            log.exception("probe of %s (%s) failed unexpectedly", pair, planned.reason)
        finally:
            state.in_flight = False

    async def _lease(self, pair: Pair, planned: Plan) -> str:
        assert planned.slot is not None
        try:
            holder = await self.store.try_lease(pair, planned.slot, self.replica, planned.period_s)
        except StoreUnavailable as exc:
            if self.coordination_error is None:
                log.warning("probe leases unavailable, probing on this replica's own schedule "
                            "within its budget: %s", exc)  # fmt: skip
            self.coordination_error = self._runner.redact(str(exc))
            return f"{self.replica} (store unavailable)"
        if self.coordination_error is not None:
            log.info("probe leases available again")
            self.coordination_error = None
        return holder if holder is not None else "(expired)"

    async def probe_now(self, pair: Pair) -> tuple[Sample, str | None]:
        """POST /admin/probe: probe at once (after a probe of the pair in flight), within the
        budget (the part of models with traffic). Returns the sample and the error text
        (redacted). Raises BudgetExhausted."""
        estimate = self._estimate_usd(pair)
        spent = await self.budget.spend(pair.model, False, estimate, held=False)
        if isinstance(spent, Refusal):
            self._pause(spent.why, estimate)
            raise BudgetExhausted(spent.why)
        return await self._probe(pair, self.states[pair], Reason.MANUAL, spent)

    async def _probe(
        self, pair: Pair, state: PairState, reason: Reason, ticket: Ticket
    ) -> tuple[Sample, str | None]:
        async with state.lock:  # concurrency 1 per pair
            policy = self._policies.current.for_model(pair.model)
            probe = policy.probe
            timeout = probe.timeout_s * self.time_scale
            size = policy.prefill.probe_tokens if reason is Reason.PREFILL else None
            result = await self._runner.run(pair, self.upstream_models[pair], probe, timeout, size)
            sample = result.sample
            self._buffer.add_sample(sample)
            state.last, state.last_reason, state.last_error = sample, reason, result.error
            state.probes += 1
            state.cost_usd += result.cost_usd
            self._metrics.count_probe(pair, sample.outcome.value, reason.value)
            if result.error is not None:
                log.info("probe %s (%s): %s: %s", pair, reason, sample.outcome, result.error)
        await self.budget.settle(ticket, result.cost_usd)
        return sample, result.error

    # -- what admin and metrics show ------------------------------------------------------

    def budget_left(self) -> tuple[int, float]:
        """What is left of the budget in use (the fleet's, or this replica's share), as last
        seen."""
        probes, cost = self.budget.used()
        max_probes, max_cost = self.budget.caps(self.budget.shared)
        return max(0, max_probes - probes), max(0.0, max_cost - cost)

    def policy(self, model: str) -> ModelPolicy:
        return self._policies.current.for_model(model)

    def plan_of(self, pair: Pair, now: float) -> Plan:
        """The pair's current plan (as of the last tick, else made now)."""
        state = self.states[pair]
        return state.plan or self._plan(pair, state, now)


class BudgetExhausted(TtftRouterError):
    """A probe was refused: the budget of this hour is spent."""
