"""Probe prices: config first (model@provider, then provider), then litellm's bundled map for
litellm-kind pairs (or all, with prober.litellm_prices), else the high unknown price."""

from __future__ import annotations

import pytest

from proxy.config import Config
from proxy.domain import Pair
from proxy.prober import Pricing


def config(**prober: object) -> Config:
    return Config.model_validate({
        "providers": {
            "vllm": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
            "oai": {"kind": "litellm", "litellm_provider": "openai"},
        },
        "models": {"m": {"providers": {"vllm": "gpt-4o-mini", "oai": "gpt-4o-mini"}}},
        "prober": prober,
    })  # fmt: skip


PRICE = {"prompt_per_1m_usd": 2.0, "completion_per_1m_usd": 8.0}


async def test_a_config_price_wins_most_specific_first() -> None:
    pricing = Pricing(config(prices={"vllm": PRICE, "m@oai": {**PRICE, "prompt_per_1m_usd": 1}}))
    assert await pricing.price(Pair("m", "vllm"), "gpt-4o-mini") == pytest.approx((2e-6, 8e-6))
    assert await pricing.price(Pair("m", "oai"), "gpt-4o-mini") == pytest.approx((1e-6, 8e-6))
    assert pricing.cached(Pair("m", "oai")) == ((pytest.approx(1e-6), pytest.approx(8e-6)),
                                                 "config")  # fmt: skip


async def test_an_openai_kind_pair_is_not_looked_up_unless_asked() -> None:
    pricing = Pricing(config())
    assert await pricing.price(Pair("m", "vllm"), "gpt-4o-mini") == pytest.approx((1e-5, 3e-5))
    cached = pricing.cached(Pair("m", "vllm"))
    assert cached is not None and cached[1].startswith("unknown")


async def test_litellm_pairs_are_priced_from_its_bundled_map() -> None:
    pricing = Pricing(config(litellm_prices=True))
    for provider in ("oai", "vllm"):
        prompt, completion = await pricing.price(Pair("m", provider), "gpt-4o-mini")
        assert 0 < prompt < completion < 1e-4
        cached = pricing.cached(Pair("m", provider))
        assert cached is not None and cached[1] == "litellm"
