"""The usage and cost of one request: the tokens its answer reported x its provider's price.

For a priced model dispatch asks the upstream for usage (`stream_options.include_usage`
on a chat stream; a Responses stream reports it in its last event), `UsageTap` notes
the usage as the winner's events pass (and drops a chat usage-only chunk when the client
did not ask for usage, so its stream keeps its shape), and
`Meter.cost_usd` turns what was reported into USD (docs/cost.md). Knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.core.domain import Decision, Outcome
from proxy.settings.pricing import PairPrice
from proxy.upstream.measure import USAGE_MARKS as _MARKS
from proxy.upstream.measure import Usage
from proxy.upstream.sse import iter_data, parse_payload


def asks_for_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client's own request asks a stream for its usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


@dataclass(slots=True)
class UsageTap:
    """Notes the usage of forwarded SSE events; `strip`: drop usage-only chunks."""

    strip: bool
    usage: Usage = field(default_factory=Usage)

    def __call__(self, events: bytes) -> bytes:
        if _MARKS[0] not in events and _MARKS[1] not in events:
            return events
        if not self.strip:  # note the usage, forward the events as they are
            for block in events.split(b"\n\n"):
                if b'"usage"' in block:
                    self._note(block)
            return events
        kept: list[bytes] = []
        for block in events.split(b"\n\n"):
            if not block:
                continue
            if b'"usage"' in block:
                chunk = self._note(block)
                if chunk is not None and not chunk.get("choices"):
                    continue  # a chat usage-only chunk
            kept.append(block + b"\n\n")
        return b"".join(kept)

    def _note(self, block: bytes) -> dict[str, Any] | None:
        payloads = iter_data(block)
        chunk = parse_payload(payloads[0]) if payloads else None
        if chunk is not None:
            self.usage.note(chunk)
        return chunk

    def note_body(self, answer: Mapping[str, Any]) -> None:
        """A whole (non-stream) answer's usage."""
        self.usage.note(dict(answer))


def meter_for(
    prices: Mapping[str, PairPrice], body: Mapping[str, Any], usage_in_stream: bool,
    counts_tokens: bool = False,
) -> Meter | None:  # fmt: skip
    """A request's meter when its model is priced or its client counts tokens (else None).
    `usage_in_stream`: the endpoint's stream reports usage in a usage-only chunk when asked,
    which is dropped again unless the client asked for it; other streams report it in their
    last event, which every client gets."""
    if not prices and not counts_tokens:
        return None
    return Meter(prices, UsageTap(strip=usage_in_stream and not asks_for_usage(body)))


@dataclass(slots=True)
class Meter:
    """One request's metering: its model's prices (provider -> price) and what it used."""

    prices: Mapping[str, PairPrice]
    tap: UsageTap

    def cost_usd(self, provider: str) -> float | None:
        """Reported tokens x `provider`'s price; None when either is unknown (an answer
        reporting prompt tokens only, as embeddings do, completed none)."""
        price = self.prices.get(provider)
        usage = self.tap.usage
        if price is None or usage.prompt_tokens is None:
            return None
        return price.cost_usd(usage.prompt_tokens, usage.completion_tokens or 0)


# Attempts that reached a provider and may have cost prefill there: sent and answered, or cut
# off before or after their first token. Refused ones (429, 5xx, 4xx, no connection) did not.
_REACHED = frozenset((Outcome.OK, Outcome.CANCELLED, Outcome.TIMEOUT, Outcome.STREAM_ERROR))


def request_cost(decision: Decision, meter: Meter | None, prompt_tokens: int) -> float | None:
    """What a request cost the operator, in USD: its answer's metered cost, plus for every
    other attempt that reached a provider (a hedge's loser, a failover's timed-out attempt)
    an estimate, its prompt at that pair's prompt price and one completion token if it
    produced one; an answer without reported usage is estimated the same way. None when the
    model has no priced pair. Probes never come here: their cost is the prober's budget."""
    if meter is None or not meter.prices:
        return None
    total = 0.0
    for attempt in decision.attempts:
        price = meter.prices.get(attempt.provider)
        if attempt.provider == decision.winner and decision.cost_usd is not None:
            total += decision.cost_usd
        elif price is not None and attempt.outcome in _REACHED:
            total += price.cost_usd(prompt_tokens, 1 if attempt.ttft_s is not None else 0)
    return total
