"""Scheduled probes of every pair: one streamed request through the same upstream and clock.

Owns the probe loop of this replica: on every tick it plans each pair (probe_plan.plan),
and for each probe that is due asks the budget, takes the pair's lease for the slot in the
store (so that replicas sharing the store send one probe per slot, not one each), sends it
and puts the sample (source=probe) into the same buffer as real traffic, so it enters the
same windows and scores. Each pair has at most one probe in flight, and each probe is a
task of its own: a 90 s cold start holds up no other pair. Does not route and never touches
a client's request. docs/probing.md tells the whole design.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from proxy.core.domain import Outcome, Pair, Sample, Source
from proxy.core.loops import pause
from proxy.learning.coldness import learn_idle_to_cold
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.base import Store, StoreUnavailable
from proxy.learning.store.buffer import SampleBuffer
from proxy.probing.schedule import (
    Budget,
    PairView,
    Plan,
    Reason,
    Timing,
    is_bursting,
    keep_warm_spacing,
    plan,
)
from proxy.routing.ranking import Router
from proxy.settings.config import Config
from proxy.settings.policy import ModelPolicy, PolicyHolder
from proxy.settings.pricing import Pricing
from proxy.telemetry.metrics import Metrics
from proxy.upstream.base import Upstream
from proxy.upstream.measure import Usage, estimate_prompt_tokens, measure_stream
from proxy.upstream.redact import Redactor

log = logging.getLogger("ttft_router.prober")

CHAT_PATH = "/chat/completions"
HOUR_S = 3600.0
MIN_TICK_S = 0.01


class Evidence(NamedTuple):
    """What routing says of a model's pairs: the ones it wants measured (provider -> why)
    and the ones clearly worse than the leader (their burst of probes ends early)."""

    wanted: Mapping[str, str]
    settled: frozenset[str]


# `wanted(model)` -> the model's Evidence (routing.evidence_wanted, out_of_contention)
Wanted = Callable[[str], Evidence]


@dataclass(slots=True)
class PairState:
    """What this replica knows of one pair's probing (the shared part is in the store)."""

    bursting: bool = True
    in_flight: bool = False
    done: str | None = None  # the last slot fired (lease tried) here
    plan: Plan | None = None
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
        buffer: SampleBuffer,
        store: Store,
        *,
        upstreams: Mapping[str, Upstream],
        router: Router,
        metrics: Metrics,
        replica: str,
        redact: Redactor,
        wanted: Wanted | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self._config = config
        self._settings = config.prober
        self._policies = policies
        self._scoreboard = scoreboard
        self._buffer = buffer
        self._store = store
        self._upstreams = upstreams
        self._router = router
        self._metrics = metrics
        self.replica = replica
        self._redact = redact
        self._wanted = wanted
        self.time_scale = self._settings.time_scale
        self.budget = Budget(
            self._settings.max_probes_per_hour,
            self._settings.max_cost_per_hour_usd,
            HOUR_S * self.time_scale,
        )
        self.pricing = pricing or Pricing(config)  # the app passes its own (proxy.settings.pricing)
        self.paused_because: str | None = None
        self.coordination_error: str | None = None
        self._slots = asyncio.Semaphore(self._settings.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_models = {
            Pair(model, provider): upstream_model
            for model, entry in config.models.items()
            for provider, upstream_model in entry.providers.items()
        }
        self.states = {pair: PairState() for pair in self.upstream_models}
        self._learned: dict[Pair, tuple[tuple[float, float, int, int], float | None]] = {}

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Plan and fire due probes every tick until `stop`; then cancel probes in flight."""
        tick = max(MIN_TICK_S, self._settings.tick_s * self.time_scale)
        try:
            while not stop.is_set():
                self.tick(time.time())
                if await pause(stop, tick):
                    break
        finally:
            if self._tasks:
                log.info("prober stopping: cancelling %d probes in flight", len(self._tasks))
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def tick(self, now: float) -> None:
        if self.paused_because is not None and self.budget.refusal(now, 0.0) is None:
            self._resume()
        for pair, state in self.states.items():
            state.plan = self._plan(pair, state, now)
            due = state.plan.due
            if state.in_flight or due is None or due > now or state.plan.slot is None:
                continue
            refusal = self._refusal(pair, now)
            if refusal is not None:
                self._pause(refusal)
                continue
            self._resume()
            state.in_flight = True
            state.done = state.plan.slot
            entry = self.budget.spend(now, self._estimate_usd(pair))  # before the next tick
            task = asyncio.create_task(
                self._scheduled(pair, state, state.plan, entry), name="probe"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _plan(self, pair: Pair, state: PairState, now: float) -> Plan:
        policy = self._policies.current.for_model(pair.model)
        timing = Timing.of(policy, self.time_scale)
        if not policy.probe.enabled or not self._settings.enabled:
            off = "off in the config" if not self._settings.enabled else "off in the policy"
            return Plan(Reason.SKIPPED, None, None, timing.interval_s, f"probing {off}")
        score = self._scoreboard.snapshot.get(pair)
        evidence = self._wanted(pair.model) if self._wanted else None
        state.bursting = is_bursting(state.bursting, score, policy.min_samples) and not (
            evidence is not None and pair.provider in evidence.settled
        )
        window = self._scoreboard.window(pair)
        uncertain = evidence.wanted.get(pair.provider) if evidence is not None else None
        is_chosen = self._is_chosen(pair)
        learning = timing.keep_warm and is_chosen  # the window is walked only then
        view = PairView(
            score=score, window=window, bursting=state.bursting, is_chosen=is_chosen,
            uncertain=uncertain, done=state.done, local_end=_end_of(state.last),
            idle_to_cold_s=self.idle_to_cold_s(pair, policy) if learning else None,
        )  # fmt: skip
        return plan(pair, timing, view, now)

    def _is_chosen(self, pair: Pair) -> bool:
        incumbent = self._router.incumbents.get(pair.model)
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

    def _estimate_usd(self, pair: Pair) -> float:
        """A probe's cost before it is sent: the body's size as prompt tokens (an
        overestimate), max_tokens completion tokens."""
        price, _ = self.pricing.for_budget(pair)
        per_prompt, per_completion = price.prompt_usd, price.completion_usd
        policy = self._policies.current.for_model(pair.model).probe
        prompt = estimate_prompt_tokens(len(self.body(pair)))
        return prompt * per_prompt + policy.max_tokens * per_completion

    def _refusal(self, pair: Pair, now: float) -> str | None:
        return self.budget.refusal(now, self._estimate_usd(pair))

    def _pause(self, why: str) -> None:
        if self.paused_because is None:
            log.warning("prober paused at its budget: %s", why)
        self.paused_because = why

    def _resume(self) -> None:
        if self.paused_because is not None:
            log.info("prober resumed: the budget has room again")
            self.paused_because = None

    # -- one probe ----------------------------------------------------------------------

    async def _scheduled(
        self, pair: Pair, state: PairState, planned: Plan, entry: list[float]
    ) -> None:
        try:
            holder = await self._lease(pair, planned)
            state.lease_holder = holder
            if holder != self.replica and not holder.endswith("(store unavailable)"):
                self.budget.refund(entry)
                return  # another replica has this slot
            async with self._slots:
                await self._probe(pair, state, planned.reason, entry)
        except Exception:  # a bug, not a provider's failure (those are samples): say so
            log.exception("probe of %s (%s) failed unexpectedly", pair, planned.reason)
        finally:
            state.in_flight = False

    async def _lease(self, pair: Pair, planned: Plan) -> str:
        assert planned.slot is not None
        try:
            holder = await self._store.try_lease(pair, planned.slot, self.replica, planned.period_s)
        except StoreUnavailable as exc:
            if self.coordination_error is None:
                log.warning("probe leases unavailable, probing on this replica's own schedule "
                            "within its budget: %s", exc)  # fmt: skip
            self.coordination_error = self._redact(str(exc))
            return f"{self.replica} (store unavailable)"
        if self.coordination_error is not None:
            log.info("probe leases available again")
            self.coordination_error = None
        return holder if holder is not None else "(expired)"

    async def probe_now(self, pair: Pair) -> tuple[Sample, str | None]:
        """POST /admin/probe: probe at once (after a probe of the pair in flight), within the
        budget. Returns the sample and the error text (redacted). Raises BudgetExhausted."""
        refusal = self._refusal(pair, time.time())
        if refusal is not None:
            self._pause(refusal)
            raise BudgetExhausted(refusal)
        state = self.states[pair]
        entry = self.budget.spend(time.time(), self._estimate_usd(pair))
        return await self._probe(pair, state, Reason.MANUAL, entry)

    async def _probe(
        self, pair: Pair, state: PairState, reason: Reason, entry: list[float]
    ) -> tuple[Sample, str | None]:
        async with state.lock:  # concurrency 1 per pair
            if not self.pricing.resolved:  # the app resolves at start-up; a bare prober here
                await asyncio.to_thread(self.pricing.resolve)
            found, _ = self.pricing.for_budget(pair)
            price = (found.prompt_usd, found.completion_usd)
            policy = self._policies.current.for_model(pair.model)
            body = self.body(pair)
            usage = Usage()
            timeout = policy.probe.timeout_s * self.time_scale
            clock, outcome, error = await measure_stream(
                self._upstreams[pair.provider], CHAT_PATH, body, timeout, usage
            )
            prompt_tokens = estimate_prompt_tokens(len(body))
            sample = clock.sample(
                pair.model, pair.provider, outcome, source=Source.PROBE,
                prompt_tokens=prompt_tokens, replica=self.replica,
            )  # fmt: skip
            self._buffer.add_sample(sample)
            spent = self._cost(usage, prompt_tokens, policy.probe.max_tokens, price, outcome)
            self.budget.settle(entry, spent)
            error = self._redact.provider_text(error) if error is not None else None
            state.last, state.last_reason, state.last_error = sample, reason, error
            state.probes += 1
            state.cost_usd += spent
            self._metrics.count_probe(pair, outcome.value, reason.value)
            if error is not None:
                log.info("probe %s (%s): %s: %s", pair, reason, outcome, error)
            return sample, error

    @staticmethod
    def _cost(
        usage: Usage, prompt_estimate: int, max_tokens: int, price: tuple[float, float],
        outcome: Outcome,
    ) -> float:  # fmt: skip
        """Reported tokens x price; the estimate where the stream reported none (a probe cut
        off may still be billed for its prompt; a refused one, HTTP 4xx/429, is not)."""
        if outcome in (Outcome.HTTP_4XX, Outcome.RATE_LIMITED, Outcome.CONNECT_ERROR):
            return 0.0
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else prompt_estimate
        completion = usage.completion_tokens
        if completion is None:
            completion = max_tokens if outcome is Outcome.OK else 0
        return prompt * price[0] + completion * price[1]

    def body(self, pair: Pair) -> bytes:
        """The probe request: the policy's fixed prompt, temperature 0, max_tokens, streamed
        with usage."""
        probe = self._policies.current.for_model(pair.model).probe
        return orjson.dumps({
            "model": self.upstream_models[pair],
            "messages": [{"role": "user", "content": probe.prompt}],
            "max_tokens": probe.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        })  # fmt: skip

    # -- what admin and metrics show ------------------------------------------------------

    def budget_left(self, now: float) -> tuple[int, float]:
        probes, cost = self.budget.used(now)
        return self.budget.max_probes - probes, self.budget.max_cost_usd - cost

    def status(self, now: float, model: str | None = None) -> dict[str, Any]:
        probes, cost = self.budget.used(now)
        resumes = self.budget.resumes_at(now) if self.paused_because else None
        return {
            "replica": self.replica,
            "enabled": self._settings.enabled,
            "time_scale": self.time_scale,
            "coordination": self._coordination(),
            "budget": {
                "window_s": self.budget.window_s,
                "max_probes": self.budget.max_probes,
                "used_probes": probes,
                "max_cost_usd": self.budget.max_cost_usd,
                "used_cost_usd": round(cost, 9),
                "paused": self.paused_because is not None,
                "paused_because": self.paused_because,
                "resumes_at": resumes,
            },
            "in_flight": len(self._tasks),
            "pairs": [
                self._pair_status(pair, state, now)
                for pair, state in self.states.items()
                if model is None or pair.model == model
            ],
        }

    def _coordination(self) -> dict[str, Any]:
        if self.coordination_error is not None:
            return {"ok": False, "mode": "local: this replica's own schedule within its budget",
                    "detail": self.coordination_error}  # fmt: skip
        shared = self._store.kind != "memory"
        mode = f"leases in the {self._store.kind} store" + ("" if shared else " (this process)")
        return {"ok": True, "mode": mode, "detail": None}

    def _pair_status(self, pair: Pair, state: PairState, now: float) -> dict[str, Any]:
        planned = state.plan or self._plan(pair, state, now)
        policy = self._policies.current.for_model(pair.model)
        learned = self.idle_to_cold_s(pair, policy)
        timing = Timing.of(policy, self.time_scale)
        price, own = self.pricing.for_budget(pair)
        last = state.last
        return {
            "model": pair.model,
            "provider": pair.provider,
            "reason": planned.reason.value,
            "detail": planned.detail,
            "next_due": planned.due,
            "next_due_in_s": None if planned.due is None else round(planned.due - now, 6),
            "slot": planned.slot,
            "in_flight": state.in_flight,
            "lease_holder": state.lease_holder,
            "last_probe": None if last is None else {
                **last.to_dict(), "reason": state.last_reason, "error": state.last_error,
            },
            "probes": state.probes,
            "cost_usd": round(state.cost_usd, 9),
            "price_per_1m_usd": {
                "prompt": price.prompt_per_million, "completion": price.completion_per_million,
                "from": price.source if own else "unknown (config prober.unknown_price)",
            },
            "keep_warm": {
                "enabled": timing.keep_warm,
                "is_chosen": self._is_chosen(pair),
                "idle_to_cold_s": learned,
                "spacing_s": keep_warm_spacing(timing, learned),
            },
        }  # fmt: skip


class BudgetExhausted(Exception):
    """A probe was refused: the budget of this hour is spent."""
