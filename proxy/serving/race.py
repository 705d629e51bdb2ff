"""The hedged race of one request: attempts as tasks, a hedge beside a late one, the first
to produce output wins, the others are closed at once.

Dispatch starts a race only when the policy turns hedging on (serving.hedge decides the
delay and keeps the budget); with hedging off it awaits its attempts in turn, with no task
per request. Each attempt records itself (its sample, censored when it is cancelled).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.core.domain import Candidate, Decision, HedgeRecord, Outcome
from proxy.serving.call import Call
from proxy.serving.failures import all_failed, raise_if_client_fault
from proxy.serving.forward import Started
from proxy.serving.hedge import HedgeBudget, HedgeDelay, expected_saving, hedge_delay
from proxy.upstream.base import UpstreamFailure

# (candidate, seconds left of the deadline, is it a hedge) -> the attempt's first token
Attempt = Callable[[Candidate, float, bool], Awaitable[Started]]
# closes an attempt that reached its first token but lost, and records it
Drop = Callable[[Started], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RacePlan:
    """When the next candidate joins (`delay`), how long between further ones (`every_s`),
    how many may join (`max_hedges`), and the budget they are counted in."""

    delay: HedgeDelay
    every_s: float
    max_hedges: int
    budget: HedgeBudget
    spent: bool = False  # the first hedge is paid for already (a failover race)

    @classmethod
    def hedging(cls, call: Call, budget: HedgeBudget, primary_busy: bool) -> RacePlan:
        """The policy's hedging: a quantile or fixed delay, at once for a probably cold
        primary (serving.hedge)."""
        policy = call.policy.hedge
        delay = hedge_delay(policy, call.decision.ranked[0].score, time.time(), primary_busy)
        return cls(delay, max(delay.seconds, policy.min_delay_s), policy.max_hedges, budget)


class HedgeRace:
    """Like trying candidates in turn, but an attempt without a first token after the
    hedge delay gets the next candidate beside it (budget and `max_hedges` allowing)."""

    def __init__(
        self, call: Call, queue: list[Candidate], attempt: Attempt, drop: Drop, plan: RacePlan,
        failures: list[UpstreamFailure] | None = None,
    ) -> None:  # fmt: skip
        """`failures`: of the attempts before the race (a failover race), reported with its
        own when every attempt fails."""
        self._call = call
        self._prepaid = plan.spent
        self._queue = queue
        self._attempt = attempt
        self._drop = drop
        self._budget = plan.budget
        delay = plan.delay
        self._delay_s = delay.seconds
        self._every_s = plan.every_s  # a further hedge: never at once
        self._record = call.decision.hedge = HedgeRecord(
            queue[0].provider, delay.seconds, delay.basis, delay.trigger
        )
        self._racing: dict[asyncio.Task[Started], Candidate] = {}
        self._failures: list[UpstreamFailure] = failures if failures is not None else []
        self._hedges_left = plan.max_hedges if len(queue) > 1 else 0

    async def run(self) -> Started:
        """The winner's attempt. Raises ProxyError when every attempt failed."""
        call, record, racing = self._call, self._record, self._racing
        try:
            self._launch(False)
            hedge_at = time.perf_counter() + self._delay_s
            while racing:
                wait = hedge_at - time.perf_counter() if self._hedges_left and self._queue else None
                done, _ = await asyncio.wait(
                    racing, timeout=max(wait, 0.0) if wait is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if not done:  # the hedge delay passed with no first token
                    self._hedge()
                    hedge_at = time.perf_counter() + self._every_s
                    continue
                winner = await self._collect(done)
                if winner is not None:
                    if record.fired:
                        record.winner = winner.candidate.provider
                        record.winner_ttft_s = round(
                            winner.attempt.started_s + (winner.clock.ttft_s or 0.0), 6
                        )
                    return winner
                if not racing and self._queue and call.deadline > time.perf_counter():
                    self._launch(False)  # plain failover: nothing is left in the race
                    hedge_at = time.perf_counter() + self._every_s
        finally:
            await self._close_losers()
        raise all_failed(call.decision, self._failures)

    def _launch(self, hedge: bool) -> None:
        candidate = self._queue.pop(0)
        remaining = self._call.deadline - time.perf_counter()
        task = asyncio.ensure_future(self._attempt(candidate, remaining, hedge))
        self._racing[task] = candidate

    def _hedge(self) -> None:
        record, budget = self._record, self._budget
        if self._call.deadline <= time.perf_counter():
            self._hedges_left = 0
            return
        if self._prepaid:
            self._prepaid = False
        elif not budget.try_spend(time.monotonic()):
            record.skipped = (
                f"hedge budget spent ({budget.share:.0%} of requests per {budget.window_s:g} s)"
            )
            self._hedges_left = 0
            return
        record.fired, record.skipped = True, None
        self._launch(True)
        self._hedges_left -= 1

    async def _collect(self, done: set[asyncio.Task[Started]]) -> Started | None:
        """Take the finished attempts out of the race: the first with a first token wins
        (any other that also has one is closed); failures are kept, a client fault raised."""
        winner: Started | None = None
        for task in sorted(done, key=lambda t: t.cancelled() or t.exception() is not None):
            self._racing.pop(task)
            if task.cancelled():
                continue
            error = task.exception()
            if error is None:
                started = task.result()
                if winner is None:
                    winner = started
                else:
                    await self._drop(started)
            elif isinstance(error, UpstreamFailure):
                self._failures.append(error)
                if winner is None:
                    raise_if_client_fault(error)
            else:
                raise error
        return winner

    async def _close_losers(self) -> None:
        """Cancel what is still racing (each records itself as censored) and wait for it."""
        racing = self._racing
        if not racing:
            return
        for task in racing:
            task.cancel()
        results = await asyncio.gather(*racing, return_exceptions=True)
        for result in results:
            if isinstance(result, Started):  # it got its first token as it was cancelled
                await self._drop(result)
        record, decision = self._record, self._call.decision
        if record.fired:
            waited = [a.elapsed_s for a in decision.attempts if a.outcome is Outcome.CANCELLED]
            record.loser_censored_at_s = round(max(waited), 6) if waited else None
            _saving(decision, record)


def _saving(decision: Decision, record: HedgeRecord) -> None:
    """The hedge's estimated saving (serving.hedge.expected_saving) when a hedge won."""
    if record.winner in (None, record.primary) or record.winner_ttft_s is None:
        return
    primary = next((c for c in decision.ranked if c.provider == record.primary), None)
    waited = next(
        (a.elapsed_s for a in decision.attempts if a.provider == record.primary and not a.hedge),
        None,
    )
    if primary is not None and waited is not None:
        saved = expected_saving(primary.score, record.trigger, waited, record.winner_ttft_s)
        record.saved_s = round(saved, 6)
