"""The price of every pair, in one place, and the cost of a request from its usage.

A pair's price (USD per token, prompt and completion) comes from, first to last:
`prober.prices["model@provider"]`, the provider's own `price` in config,
`prober.prices["provider"]`, litellm's bundled price map (litellm-kind providers always;
openai-kind ones with `prober.litellm_prices`), else it is unknown. Every user of a price
reads it here: the prober's budget (which assumes `prober.unknown_price` for an unknown
one, kept high so a budget is safe), request controls (`max_price`, `sort: price`), the
policy's `cost` objective and the cost of each request (docs/cost.md).

litellm's map is read once, by `resolve()`, before the app serves (off the event loop: the
first import of litellm takes seconds), and only when some pair needs it; the request path
only reads the resolved table. Does no I/O besides that import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from proxy.core.domain import Pair
from proxy.settings.config import Config, LiteLLMProvider, Price

log = logging.getLogger("ttft_router.pricing")

# (litellm provider prefix or None, model id) -> USD per token (prompt, completion), or None
PriceLookup = Callable[[str | None, str], tuple[float, float] | None]


@dataclass(frozen=True, slots=True)
class PairPrice:
    """USD per token of one pair, and where the figure came from (config | litellm)."""

    prompt_usd: float
    completion_usd: float
    source: str

    @classmethod
    def of(cls, price: Price, source: str) -> PairPrice:
        return cls(price.prompt_per_million / 1e6, price.completion_per_million / 1e6, source)

    @property
    def prompt_per_million(self) -> float:
        return self.prompt_usd * 1e6

    @property
    def completion_per_million(self) -> float:
        return self.completion_usd * 1e6

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.prompt_usd + completion_tokens * self.completion_usd


class Pricing:
    """Every configured pair's price. `resolve()` fills the table (litellm lookups included);
    until then only config prices are known."""

    def __init__(self, config: Config, lookup: PriceLookup | None = None) -> None:
        """`lookup(litellm provider prefix or None, provider's model id)`: USD per token
        (prompt, completion) from litellm's map, or None (the app passes
        `upstream.litellm_adapter.litellm_price`; without one, only config prices exist)."""
        self._config = config
        self._lookup = lookup
        self._prices: dict[Pair, PairPrice] = {}
        self._per_model: dict[str, dict[str, PairPrice]] = {}
        self.resolved = False
        for pair in self._pairs():
            found = self._configured(pair)
            if found is not None:
                self._set(pair, found)

    def _pairs(self) -> list[Pair]:
        return [Pair(m, p) for m, e in self._config.models.items() for p in e.providers]

    def _set(self, pair: Pair, price: PairPrice) -> None:
        self._prices[pair] = price
        self._per_model.setdefault(pair.model, {})[pair.provider] = price

    def _configured(self, pair: Pair) -> PairPrice | None:
        prices = self._config.prober.prices
        given = prices.get(f"{pair.model}@{pair.provider}")
        if given is None:
            given = self._config.providers[pair.provider].price or prices.get(pair.provider)
        return PairPrice.of(given, "config") if given is not None else None

    @property
    def needs_litellm(self) -> bool:
        """Whether `resolve()` would import litellm (some pair is left to its map)."""
        return any(self._wants_litellm(pair) for pair in self._pairs())

    def _wants_litellm(self, pair: Pair) -> bool:
        if pair in self._prices:
            return False
        provider = self._config.providers[pair.provider]
        return isinstance(provider, LiteLLMProvider) or self._config.prober.litellm_prices

    def resolve(self) -> None:
        """Look the pairs without a config price up in litellm's bundled map (imports
        litellm when some pair needs it: call off the event loop). Idempotent."""
        if self.resolved:
            return
        self.resolved = True
        wanted = [pair for pair in self._pairs() if self._wants_litellm(pair)]
        if not wanted or self._lookup is None:
            return
        for pair in wanted:
            provider = self._config.providers[pair.provider]
            prefix = provider.litellm_provider if isinstance(provider, LiteLLMProvider) else None
            upstream_model = self._config.models[pair.model].providers[pair.provider]
            try:
                found = self._lookup(prefix, upstream_model)
            except ImportError as exc:
                log.warning("no litellm price map (%s): %s unpriced", exc, pair)
                return
            if found is not None:
                self._set(pair, PairPrice(found[0], found[1], "litellm"))

    def get(self, pair: Pair) -> PairPrice | None:
        """The pair's price; None when it is known nowhere."""
        return self._prices.get(pair)

    def for_model(self, model: str) -> Mapping[str, PairPrice]:
        """provider -> price, for the model's priced pairs (empty when none is priced)."""
        return self._per_model.get(model, _NONE)

    def for_budget(self, pair: Pair) -> tuple[PairPrice, bool]:
        """The price a budget assumes: the pair's, else `prober.unknown_price`; and
        whether it is the pair's own."""
        known = self._prices.get(pair)
        if known is not None:
            return known, True
        unknown = PairPrice.of(self._config.prober.unknown_price, "unknown")
        return unknown, False


_NONE: Mapping[str, PairPrice] = {}
