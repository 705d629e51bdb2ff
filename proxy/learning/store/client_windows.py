"""Clients' limits counted in this process: what the memory store offers as `admit_client`,
and what the clients' gate falls back to while Redis is unreachable.

The same rules as the Redis store's ADMIT_CLIENT and CHARGE_CLIENT scripts
(redis_schema.py): per client a sliding window of admitted requests, each with the tokens
counted for it (the estimate, corrected by its charge while it is still in the window);
concurrency slots freed by the charge (or after `hold_s`); the day's and month's use and
spend by UTC period; a charge of a request in the window counted once. A refused request counts
nothing but the refusal. Pure: no I/O, the clock is passed in (wall-clock seconds), so
tests drive it with a fake one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from proxy.learning.store.base import ClientAsk, ClientCharge, ClientLimits, ClientUse

NANO = 1_000_000_000  # USD are counted in nano-dollars: integers, exact, as in the scripts
TOKEN_WALK = 1000  # a tokens refusal looks this far into the window for when it would fit


@dataclass(slots=True)
class Period:
    """One UTC day's or month's use of a client."""

    name: str = ""
    requests: int = 0
    tokens: int = 0
    nano: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Client:
    # the window: when each request was admitted and its id, oldest first (two deques of
    # floats and strings: no tuple per request for the collector to walk)
    times: deque[float] = field(default_factory=deque)
    ids: deque[str] = field(default_factory=deque)
    counted: dict[str, int] = field(default_factory=dict)  # id -> tokens counted in the window
    tokens: int = 0
    live: dict[str, float] = field(default_factory=dict)  # id -> when its slot frees itself
    charged: set[str] = field(default_factory=set)  # ids in the window already charged
    day: Period = field(default_factory=Period)
    month: Period = field(default_factory=Period)
    seen: float | None = None


class ClientWindows:
    """Every client's window, slots and periods. Clients are the configured ones (names come
    from the config, never from a request), so the table is bounded by the config."""

    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}

    def admit(self, ask: ClientAsk, limits: ClientLimits, now: float) -> ClientUse:
        state = self._state(ask.client)
        self._expire(state, limits.window_s, now)
        day, month = _period(state, "day", ask.day), _period(state, "month", ask.month)
        refusal, retry = self._refusal(state, ask.tokens, limits, day, month, now)
        state.seen = now
        if refusal is None:
            state.times.append(now)
            state.ids.append(ask.request_id)
            state.counted[ask.request_id] = ask.tokens
            state.tokens += ask.tokens
            state.live[ask.request_id] = now + limits.hold_s
        else:
            day.refused += 1
            month.refused += 1
        return self._use(state, limits, now, refusal, retry)

    def charge(self, charge: ClientCharge, now: float) -> None:
        """Count a finished request: once, if it is still in the window (in process a
        charge is never sent twice; the window's requests are where the contract of the
        Redis script, counted once, can be kept without memory growing with the rate)."""
        state = self._state(charge.client)
        request_id = charge.request_id
        known = state.counted.get(request_id)
        if known is not None:
            if request_id in state.charged:
                return
            state.charged.add(request_id)
            state.counted[request_id] = charge.tokens
            state.tokens += charge.tokens - known
        state.live.pop(request_id, None)
        nano = round(charge.cost_usd * NANO)
        for period in (_period(state, "day", charge.day), _period(state, "month", charge.month)):
            period.requests += 1
            period.tokens += charge.tokens
            period.nano += nano
        state.seen = now

    def use(self, client: str, limits: ClientLimits, day: str, month: str, now: float) -> ClientUse:
        """The client's use now (its window aged to `now`)."""
        state = self._state(client)
        self._expire(state, limits.window_s, now)
        _period(state, "day", day)
        _period(state, "month", month)
        return self._use(state, limits, now, None, None)

    def _state(self, client: str) -> _Client:
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client()
        return state

    def _expire(self, state: _Client, window_s: float, now: float) -> None:
        times, ids, counted = state.times, state.ids, state.counted
        cutoff = now - window_s
        while times and times[0] <= cutoff:
            times.popleft()
            request_id = ids.popleft()
            state.tokens -= counted.pop(request_id, 0)
            state.charged.discard(request_id)
        live = state.live  # in the order admitted: with one hold_s, the order they expire
        while live:
            request_id, until = next(iter(live.items()))
            if until > now:
                break
            del live[request_id]

    def _refusal(
        self, state: _Client, tokens: int, limits: ClientLimits, day: Period, month: Period,
        now: float,
    ) -> tuple[str | None, float | None]:  # fmt: skip
        """Why the ask does not fit (None: it does), and when it would (None: unknown)."""
        if limits.usd_per_day is not None and day.nano >= round(limits.usd_per_day * NANO):
            return "day", None
        if limits.usd_per_month is not None and month.nano >= round(limits.usd_per_month * NANO):
            return "month", None
        if limits.concurrent is not None and len(state.live) >= limits.concurrent:
            return "concurrent", None
        if limits.requests is not None and len(state.times) >= limits.requests:
            return "requests", state.times[0] + limits.window_s - now
        if limits.tokens is not None:
            if tokens > limits.tokens:
                return "too_large", None
            if state.tokens + tokens > limits.tokens:
                return "tokens", self._tokens_free_at(state, tokens, limits, now)
        return None, None

    def _tokens_free_at(
        self, state: _Client, tokens: int, limits: ClientLimits, now: float
    ) -> float | None:
        assert limits.tokens is not None
        freed = 0
        for i, (at, request_id) in enumerate(zip(state.times, state.ids, strict=True)):
            if i >= TOKEN_WALK:
                break
            freed += state.counted.get(request_id, 0)
            if state.tokens - freed + tokens <= limits.tokens:
                return at + limits.window_s - now
        return None

    def _use(
        self, state: _Client, limits: ClientLimits, now: float, refusal: str | None,
        retry_after_s: float | None,
    ) -> ClientUse:  # fmt: skip
        reset = state.times[-1] + limits.window_s - now if state.times else 0.0
        day, month = state.day, state.month
        return ClientUse(
            granted=refusal is None, refusal=refusal, requests=len(state.times),
            tokens=state.tokens, concurrent=len(state.live), usd_day=day.nano / NANO,
            usd_month=month.nano / NANO, retry_after_s=retry_after_s, reset_s=max(reset, 0.0),
            requests_day=day.requests, tokens_day=day.tokens, refused_day=day.refused,
            requests_month=month.requests, tokens_month=month.tokens, last_seen=state.seen,
        )  # fmt: skip


def _period(state: _Client, kind: str, name: str) -> Period:
    """The client's use of period `name` ("day" or "month"); a new period starts at zero. A
    period older than the one kept (a charge late past midnight) is not kept: it is over."""
    current: Period = getattr(state, kind)
    if current.name == name:
        return current
    period = Period(name)
    if name > current.name:  # "20250131" < "20250201": the names sort as the periods do
        setattr(state, kind, period)
    return period
