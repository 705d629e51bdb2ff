"""Circuit breakers per pair, counted where attempts end (dispatch), not from scores.

Closed: every attempt goes; `consecutive_errors` failures in a row open the circuit.
Open: the pair is left out of routing for `cooldown_s`. After the cooldown the circuit is
half-open: the next request routed to the pair is its trial, and while a trial is in flight
no other request uses the pair. A successful trial closes the circuit; a failed one opens it
for another cooldown; a cancelled one (client gone) leaves it half-open for the next request.

When every provider of a model has an open circuit, routing does not wait for a cooldown:
one request at a time is let through as a trial (`trial_order`), so recovery costs one
successful attempt. Rate limits are not failures here: a 429 has its own exclusion, which
honours the provider's Retry-After.

The state is this replica's own (failures elsewhere reach it through error rates in the
shared scores); pure: times are passed in, nothing is awaited.
"""

from __future__ import annotations

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

    def on_start(self, pair: Pair) -> None:
        """An attempt is sent to `pair`: if its circuit is open, this attempt is its trial."""
        self._in_flight[pair] = self._in_flight.get(pair, 0) + 1
        self.pending[pair] = self.pending.get(pair, 0) + 1
        state = self.states.get(pair)
        if state is not None and state.is_open and not state.trial_in_flight:
            self.states[pair] = replace(state, trial_in_flight=True)
            self.version += 1

    def on_first_token(self, pair: Pair) -> None:
        """The provider answered: its circuit closes now, not when the stream ends (else,
        while traffic shifts to it, its fast failures outrun its whole-stream successes and
        count as consecutive, and a half-open trial holds the circuit for a whole stream).
        The attempt is still in flight until `on_result`."""
        state = self.states.pop(pair, None)
        if state is not None and state.is_open:
            self.version += 1

    def on_result(self, pair: Pair, outcome: Outcome, now: float, policy: Circuit) -> None:
        """An attempt to `pair` ended with `outcome`."""
        left = self._in_flight.get(pair, 0) - 1
        if left > 0:
            self._in_flight[pair] = left
        else:
            self._in_flight.pop(pair, None)
        state = self.states.get(pair)
        if outcome is Outcome.OK:
            self.on_first_token(pair)
            return
        if outcome not in COUNTED:
            if state is not None and state.trial_in_flight:  # cancelled trial: try again
                self.states[pair] = replace(state, trial_in_flight=False)
                self.version += 1
            return
        failures = (state.failures if state else 0) + 1
        if (state is not None and state.is_open) or failures >= policy.consecutive_errors:
            self.states[pair] = CircuitState(failures, now + policy.cooldown_s)
            self.version += 1
        else:
            self.states[pair] = CircuitState(failures)


def trial_order(
    states: Mapping[Pair, CircuitState], pairs: Iterable[Pair], now: float
) -> list[Pair]:
    """When every pair of a model is out, those whose circuit is open with no trial in
    flight, soonest-due first: the next request tries them. Empty while any pair of the
    model has a trial in flight (one trial request at a time)."""
    out: list[tuple[float, Pair]] = []
    for pair in pairs:
        state = states.get(pair)
        if state is None or state.open_until is None:
            continue
        if state.trial_in_flight:
            return []
        out.append((state.open_until, pair))
    return [pair for _, pair in sorted(out)]


def retry_after_s(states: Mapping[Pair, CircuitState], pairs: Iterable[Pair], now: float) -> float:
    """Seconds a client should wait before asking again while every circuit is out."""
    waits = [
        (s.open_until - now) if not s.trial_in_flight else 1.0
        for p in pairs
        if (s := states.get(p)) is not None and s.open_until is not None
    ]
    return max(1.0, min(waits)) if waits else 1.0
