"""Circuit breakers counted where attempts end: open at the configured count, one trial
after the cooldown, closed by one good attempt, never opened by a client's own fault."""

from __future__ import annotations

from proxy.core.domain import Outcome, Pair
from proxy.routing.circuit import Breakers, retry_after_s, trial_order
from proxy.settings.policy import Circuit

PAIR = Pair("m", "a")
POLICY = Circuit(consecutive_errors=3, cooldown_s=30)


def test_opens_at_exactly_the_configured_count_of_consecutive_failures() -> None:
    breakers = Breakers()
    for _ in range(2):
        breakers.on_result(PAIR, Outcome.HTTP_5XX, 100.0, POLICY)
    assert breakers.states[PAIR].exclusion(100.0) is None
    breakers.on_result(PAIR, Outcome.CONNECT_ERROR, 100.0, POLICY)
    reason = breakers.states[PAIR].exclusion(100.0)
    assert reason is not None and reason.startswith("circuit open: the last 3 attempts failed")


def test_a_success_resets_the_count_and_rate_limits_or_cancels_do_not_count() -> None:
    breakers = Breakers()
    for outcome in (Outcome.TIMEOUT, Outcome.HTTP_5XX, Outcome.OK, Outcome.HTTP_5XX,
                    Outcome.RATE_LIMITED, Outcome.CANCELLED, Outcome.HTTP_5XX):  # fmt: skip
        breakers.on_result(PAIR, outcome, 100.0, POLICY)
    assert breakers.states[PAIR].failures == 2
    assert not breakers.states[PAIR].is_open


def test_half_open_trial_closes_on_success_and_reopens_on_failure() -> None:
    breakers = Breakers()
    for _ in range(3):
        breakers.on_result(PAIR, Outcome.HTTP_5XX, 100.0, POLICY)
    assert breakers.states[PAIR].exclusion(131.0) is None  # cooldown over: half-open
    breakers.on_start(PAIR)
    reason = breakers.states[PAIR].exclusion(131.0)
    assert reason is not None and "trial request is in flight" in reason
    breakers.on_result(PAIR, Outcome.HTTP_5XX, 131.0, POLICY)
    state = breakers.states[PAIR]
    assert state.open_until == 161.0 and not state.trial_in_flight
    breakers.on_start(PAIR)
    breakers.on_result(PAIR, Outcome.CANCELLED, 162.0, POLICY)  # a cancelled trial: again
    assert not breakers.states[PAIR].trial_in_flight
    breakers.on_start(PAIR)
    version = breakers.version
    breakers.on_result(PAIR, Outcome.OK, 163.0, POLICY)
    assert PAIR not in breakers.states and breakers.version > version


def test_trials_and_retry_after_when_every_circuit_is_open() -> None:
    breakers = Breakers()
    b = Pair("m", "b")
    for pair, at in ((PAIR, 100.0), (b, 90.0)):
        for _ in range(3):
            breakers.on_result(pair, Outcome.HTTP_5XX, at, POLICY)
    assert trial_order(breakers.states, [PAIR, b], 100.0) == [b, PAIR]
    assert retry_after_s(breakers.states, [PAIR, b], 100.0) == 20.0
    breakers.on_start(b)
    assert trial_order(breakers.states, [PAIR, b], 100.0) == []
    assert retry_after_s(breakers.states, [PAIR, b], 100.0) == 1.0
