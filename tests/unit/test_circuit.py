"""Circuit breakers counted where attempts end: open at the configured count, one trial
after the cooldown, closed by one good attempt, never opened by a client's own fault."""

from __future__ import annotations

import itertools

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
        if outcome is Outcome.OK:  # a success has its first token before it ends
            breakers.on_first_token(PAIR)
        breakers.on_result(PAIR, outcome, 100.0, POLICY)
    assert breakers.states[PAIR].failures == 2
    assert not breakers.states[PAIR].is_open


def test_half_open_trial_closes_on_success_and_reopens_on_failure() -> None:
    breakers = Breakers()
    for _ in range(3):
        breakers.on_result(PAIR, Outcome.HTTP_5XX, 100.0, POLICY)
    assert breakers.states[PAIR].exclusion(131.0) is None  # cooldown over: half-open
    breakers.on_start(PAIR, 131.0)
    reason = breakers.states[PAIR].exclusion(131.0)
    assert reason is not None and "trial request is in flight" in reason
    breakers.on_result(PAIR, Outcome.HTTP_5XX, 131.0, POLICY)
    state = breakers.states[PAIR]
    assert state.open_until == 161.0 and not state.trial_in_flight
    breakers.on_start(PAIR, 131.0)
    breakers.on_result(PAIR, Outcome.CANCELLED, 162.0, POLICY)  # a cancelled trial: again
    assert not breakers.states[PAIR].trial_in_flight
    breakers.on_start(PAIR, 131.0)
    version = breakers.version
    breakers.on_first_token(PAIR)
    breakers.on_result(PAIR, Outcome.OK, 163.0, POLICY)
    assert PAIR not in breakers.states and breakers.version > version


def test_an_old_stream_ending_well_after_the_circuit_opened_does_not_close_it() -> None:
    """A long stream whose first token came before an outage ends after three failures
    opened the circuit: its success says nothing of now."""
    breakers = Breakers()
    breakers.on_start(PAIR, 100.0, token=1)
    breakers.on_first_token(PAIR)
    for token in (2, 3, 4):
        breakers.on_start(PAIR, 101.0, token=token)
        breakers.on_result(PAIR, Outcome.TIMEOUT, 102.0, POLICY, token=token)
    breakers.on_result(PAIR, Outcome.OK, 103.0, POLICY, token=1)
    assert breakers.states[PAIR].is_open


def test_only_the_trial_itself_clears_the_trial_in_flight() -> None:
    """Attempts that went before the circuit opened may end while its trial is out: their
    failures or cancels do not clear the flag (which would let a second trial go)."""
    breakers = Breakers()
    for token in (1, 2, 3, 4):
        breakers.on_start(PAIR, 100.0, token=token)
    for token in (1, 2, 3):
        breakers.on_result(PAIR, Outcome.HTTP_5XX, 100.0, POLICY, token=token)
    assert breakers.states[PAIR].is_open
    breakers.on_start(PAIR, 131.0, token=9)  # the trial
    breakers.on_result(PAIR, Outcome.CANCELLED, 131.5, POLICY, token=4)
    assert breakers.states[PAIR].trial_in_flight
    breakers.on_result(PAIR, Outcome.HTTP_5XX, 131.6, POLICY, token=4)
    assert breakers.states[PAIR].trial_in_flight
    breakers.on_result(PAIR, Outcome.HTTP_5XX, 132.0, POLICY, token=9)  # the trial failed
    state = breakers.states[PAIR]
    assert state.is_open and not state.trial_in_flight and state.open_until == 162.0


def test_trials_and_retry_after_when_every_circuit_is_open() -> None:
    breakers = Breakers()
    b = Pair("m", "b")
    for pair, at in ((PAIR, 100.0), (b, 90.0)):
        for _ in range(3):
            breakers.on_result(pair, Outcome.HTTP_5XX, at, POLICY)
    assert trial_order(breakers.states, [PAIR, b], 100.0, 1.0) == [b, PAIR]
    assert retry_after_s(breakers.states, [PAIR, b], 100.0, 1.0) == 1.0  # a trial may go
    breakers.on_start(b, 100.0)
    assert trial_order(breakers.states, [PAIR, b], 100.0, 1.0) == []
    assert retry_after_s(breakers.states, [PAIR, b], 100.0, 1.0) == 1.0


def test_a_dead_provider_gets_one_trial_per_interval_and_recovery_is_seen_at_the_next() -> None:
    """Total outage, a provider that refuses at once: without pacing every request would be
    its trial; with it, one per `interval` (here 2 s) and the next one after it recovers."""
    breakers = Breakers()
    for _ in range(3):
        breakers.on_result(PAIR, Outcome.CONNECT_ERROR, 100.0, POLICY)
    trials = []
    now = 100.0
    while now < 110.0:  # a request every 50 ms for 10 s
        if trial_order(breakers.states, [PAIR], now, 2.0):
            trials.append(now)
            breakers.on_start(PAIR, now)
            breakers.on_result(PAIR, Outcome.CONNECT_ERROR, now + 0.001, POLICY)
        now = round(now + 0.05, 3)
    assert len(trials) == 5 and all(b - a >= 2.0 for a, b in itertools.pairwise(trials))
    assert 1.0 <= retry_after_s(breakers.states, [PAIR], now, 2.0) <= 2.0
    recovered_at = now  # the provider is back: the next trial is due within the interval
    while not trial_order(breakers.states, [PAIR], now, 2.0):
        now = round(now + 0.05, 3)
    breakers.on_start(PAIR, now)
    breakers.on_first_token(PAIR)
    assert PAIR not in breakers.states and now - recovered_at <= 2.0
