"""Circuit breakers per pair, counted where attempts end (dispatch), not from scores.

Closed: every attempt goes; `consecutive_errors` failures in a row open the circuit.
Open: the pair is left out of routing for `cooldown_s`. After the cooldown the circuit is
half-open: the next request routed to the pair is its trial, and while a trial is in flight
no other request uses the pair. A successful trial closes the circuit; a failed one opens it
for another cooldown; a cancelled one (client gone) leaves it half-open for the next request.

When every provider of a model has an open circuit, routing does not wait for a cooldown:
one request at a time is let through as a trial (`trial_order`), so recovery costs one
successful attempt; a pair gets a trial at most every `trial_interval_s` (a provider that
refuses at once is not sent every request, and its recovery is still seen within about
that). Rate limits are not failures here: a 429 has its own exclusion, which honours the
provider's newest Retry-After up to `max_retry_after_s`.

The state is this replica's own (failures elsewhere reach it through error rates in the
shared scores); pure: times are passed in, nothing is awaited.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from proxy.core.domain import Outcome, Pair
from proxy.settings.policy import Circuit

# Attempt outcomes that count against a circuit (a 429 has its own exclusion; a client
# cancel and a client's malformed request are not the pair's fault).
COUNTED = frozenset(
    (Outcome.TIMEOUT, Outcome.HTTP_5XX, Outcome.CONNECT_ERROR, Outcome.STREAM_ERROR,
     Outcome.HTTP_4XX)
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CircuitState:
    """`open_until` None: closed. Otherwise open until then, half-open after it."""

    failures: int
    open_until: float | None = None
    trial_in_flight: bool = False
    trial_at: float = -math.inf  # when its last trial went out
    trial_token: int = 0  # the trial attempt's token (routing's AttemptStarted)

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def exclusion(self, now: float) -> str | None:
        """Why routing leaves the pair out now, or None when it may be used."""
        if self.open_until is None:
            return None
        if self.trial_in_flight:
            return f"circuit half-open: a trial request is in flight ({self.failures} failures)"
        if now < self.open_until:
            return (
                f"circuit open: the last {self.failures} attempts failed; "
                f"a trial in {self.open_until - now:.0f} s"
            )
        return None  # half-open: this request is the trial


class Breakers:
    """The circuit of every pair that failed lately. `version` moves on every change that
    can change a routing decision (open, trial, close).

    Also counts, per pair, the attempts whose result the scores do not hold yet (`pending`:
    in flight, or ended since the last scoreboard snapshot; `on_snapshot()` is called by
    the routing component when a new snapshot arrives): routing treats them as evidence on
    its way."""

    def __init__(self) -> None:
        self.states: dict[Pair, CircuitState] = {}
        self.version = 0
        self.pending: dict[Pair, int] = {}
        self._in_flight: dict[Pair, int] = {}

    def on_snapshot(self) -> None:
        """A new scores snapshot: attempts that ended before it are in it (or lost)."""
        self.pending = dict(self._in_flight)

    def on_start(self, pair: Pair, now: float, token: int = 0) -> None:
        """An attempt is sent to `pair`: if its circuit is open, this attempt is its trial."""
        self._in_flight[pair] = self._in_flight.get(pair, 0) + 1
        self.pending[pair] = self.pending.get(pair, 0) + 1
        state = self.states.get(pair)
        if state is not None and state.is_open and not state.trial_in_flight:
            self.states[pair] = replace(
                state, trial_in_flight=True, trial_at=now, trial_token=token
            )
            self.version += 1

    def on_first_token(self, pair: Pair) -> None:
        """The provider answered: its circuit closes now, not when the stream ends (else,
        while traffic shifts to it, its fast failures outrun its whole-stream successes and
        count as consecutive, and a half-open trial holds the circuit for a whole stream).
        The attempt is still in flight until `on_result`."""
        state = self.states.pop(pair, None)
        if state is not None and state.is_open:
            self.version += 1

    def on_result(
        self, pair: Pair, outcome: Outcome, now: float, policy: Circuit, token: int = 0
    ) -> None:
        """An attempt to `pair` (`token`: its AttemptStarted's) ended with `outcome`. A
        success changes no circuit here: its first token closed it then, and a stream that
        began before an outage and ends after the circuit opened says nothing of now."""
        left = self._in_flight.get(pair, 0) - 1
        if left > 0:
            self._in_flight[pair] = left
        else:
            self._in_flight.pop(pair, None)
        state = self.states.get(pair)
        is_trial = state is not None and state.trial_in_flight and state.trial_token == token
        if outcome is Outcome.OK:
            return
        if outcome not in COUNTED:
            if state is not None and is_trial:  # a cancelled trial: the next request tries
                self.states[pair] = replace(state, trial_in_flight=False)
                self.version += 1
            return
        failures = (state.failures if state else 0) + 1
        if state is not None and state.is_open:
            # a failed trial opens it again; another attempt's failure (one that went before
            # the circuit opened) leaves a trial in flight as it is
            in_flight = state.trial_in_flight and not is_trial
            self.states[pair] = replace(
                state, failures=failures, open_until=now + policy.cooldown_s,
                trial_in_flight=in_flight,
            )  # fmt: skip
            self.version += 1
        elif failures >= policy.consecutive_errors:
            trial_at = state.trial_at if state is not None else -math.inf
            self.states[pair] = CircuitState(failures, now + policy.cooldown_s, False, trial_at)
            self.version += 1
        else:
            self.states[pair] = CircuitState(failures)


def trial_order(
    states: Mapping[Pair, CircuitState], pairs: Iterable[Pair], now: float, interval_s: float
) -> list[Pair]:
    """When every pair of a model is out, those whose circuit is open with no trial in
    flight and none for `interval_s`, soonest-due first: the next request tries them. Empty
    while any pair of the model has a trial in flight (one trial request at a time)."""
    out: list[tuple[float, Pair]] = []
    for pair in pairs:
        state = states.get(pair)
        if state is None or state.open_until is None:
            continue
        if state.trial_in_flight:
            return []
        if now - state.trial_at >= interval_s:
            out.append((state.open_until, pair))
    return [pair for _, pair in sorted(out)]


def retry_after_s(
    states: Mapping[Pair, CircuitState], pairs: Iterable[Pair], now: float, interval_s: float
) -> float:
    """Seconds a client should wait before asking again while every circuit is out: until
    the next trial may go (at least a second)."""
    waits = [
        min(s.open_until, s.trial_at + interval_s) - now if not s.trial_in_flight else 1.0
        for p in pairs
        if (s := states.get(p)) is not None and s.open_until is not None
    ]
    return max(1.0, min(waits)) if waits else 1.0
