"""Conversation affinity: an affinity key (a client's `user`, or `x-ttft-router-affinity`)
bound to the provider that last served it, per model, for the policy's `affinity.ttl_s`
after its last request.

Only the table lives here: routing.steering moves a bound provider first when it is among
the ranked candidates (its circuit not open, not rate-limited, not excluded), and the binding
moves to whichever provider serves the request, so a pair that fails (failover to another)
releases its conversations to the one that answered. Per replica, in memory, bounded by
`affinity.max_keys` (the least recently used go first); no clock of its own.
"""

from __future__ import annotations

from collections import OrderedDict

from proxy.settings.policy import Affinity as AffinityPolicy


class AffinityTable:
    """(model, key) -> (provider, expires at), least recently used first."""

    def __init__(self) -> None:
        self._bindings: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bindings)

    def lookup(self, model: str, key: str, now: float) -> str | None:
        """The provider `key` is bound to, or None (never bound, or expired)."""
        entry = self._bindings.get((model, key))
        if entry is None:
            return None
        if entry[1] <= now:
            del self._bindings[(model, key)]
            return None
        return entry[0]

    def bind(self, model: str, key: str, provider: str, now: float, policy: AffinityPolicy) -> None:
        """`provider` served `key`'s request: bind it there for `policy.ttl_s` from now."""
        slot = (model, key)
        self._bindings[slot] = (provider, now + policy.ttl_s)
        self._bindings.move_to_end(slot)
        while len(self._bindings) > policy.max_keys:
            self._bindings.popitem(last=False)
