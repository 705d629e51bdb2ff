"""Prices (settings.pricing): config first (model@provider in prober.prices, the provider's own
`price`, then provider in prober.prices), then litellm's bundled map for litellm-kind pairs
(or all, with prober.litellm_prices), else unknown (the budget assumes the high unknown
price); a request's cost is its tokens x its pair's price."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.core.domain import Pair
from proxy.settings.config import Config
from proxy.settings.pricing import Pricing
from proxy.upstream.litellm_adapter import litellm_price


def config(provider_price: dict[str, float] | None = None, **prober: Any) -> Config:
    vllm: dict[str, Any] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
    if provider_price is not None:
        vllm["price"] = provider_price
    return Config.model_validate({
        "auth": {"allow_unauthenticated": True},
        "providers": {"vllm": vllm, "oai": {"kind": "litellm", "litellm_provider": "openai"}},
        "models": {"m": {"providers": {"vllm": "gpt-4o-mini", "oai": "gpt-4o-mini"}}},
        "prober": prober,
    })  # fmt: skip


PRICE = {"prompt_per_million": 2.0, "completion_per_million": 8.0}
OLD_NAMES = {"prompt_per_1m_usd": 2.0, "completion_per_1m_usd": 8.0}


def test_a_config_price_wins_most_specific_first() -> None:
    pricing = Pricing(
        config(prices={"vllm": OLD_NAMES, "m@oai": {**PRICE, "prompt_per_million": 1}})
    )
    vllm, oai = pricing.get(Pair("m", "vllm")), pricing.get(Pair("m", "oai"))
    assert vllm is not None and (vllm.prompt_usd, vllm.completion_usd) == pytest.approx(
        (2e-6, 8e-6)
    )
    assert oai is not None and (oai.prompt_usd, oai.completion_usd) == pytest.approx((1e-6, 8e-6))
    assert oai.source == "config"
    assert set(pricing.for_model("m")) == {"vllm", "oai"}


def test_the_providers_own_price_beats_prober_prices_by_provider_not_by_pair() -> None:
    pricing = Pricing(config({"prompt_per_million": 3, "completion_per_million": 4},
                             prices={"vllm": PRICE}))  # fmt: skip
    price = pricing.get(Pair("m", "vllm"))
    assert price is not None and price.prompt_per_million == pytest.approx(3.0)
    pinned = Pricing(config({"prompt_per_million": 3, "completion_per_million": 4},
                            prices={"m@vllm": PRICE}))  # fmt: skip
    price = pinned.get(Pair("m", "vllm"))
    assert price is not None and price.prompt_per_million == pytest.approx(2.0)


def test_an_openai_kind_pair_is_not_looked_up_unless_asked() -> None:
    pricing = Pricing(config())
    assert pricing.needs_litellm  # the litellm-kind pair is
    pricing.resolve()
    assert pricing.get(Pair("m", "vllm")) is None
    assumed, own = pricing.for_budget(Pair("m", "vllm"))
    assert not own and (assumed.prompt_usd, assumed.completion_usd) == pytest.approx((1e-5, 3e-5))


def test_config_prices_need_no_litellm() -> None:
    both = {"vllm": PRICE, "oai": PRICE}
    assert not Pricing(config(prices=both)).needs_litellm


def test_litellm_pairs_are_priced_from_its_bundled_map() -> None:
    pricing = Pricing(config(litellm_prices=True), litellm_price)
    pricing.resolve()
    for provider in ("oai", "vllm"):
        price = pricing.get(Pair("m", provider))
        assert price is not None and price.source == "litellm"
        assert 0 < price.prompt_usd < price.completion_usd < 1e-4


def test_cost_is_tokens_times_price() -> None:
    price = Pricing(config(PRICE)).get(Pair("m", "vllm"))
    assert price is not None
    assert price.cost_usd(1000, 500) == pytest.approx(1000 * 2e-6 + 500 * 8e-6)


def test_a_negative_price_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"price\.prompt_per_million"):
        config({"prompt_per_million": -1, "completion_per_million": 1})


def test_a_long_probe_is_estimated_at_its_own_prompt_size() -> None:
    """The budget holds a probe's estimate before it is sent: a long probe's (4,000 tokens)
    is dozens of short ones estimated as a short one, and three of them spent the
    default hour's cost cap at the unknown price before the budget saw them)."""
    from proxy.probing.runner import ProbeRunner
    from proxy.settings.policy import ModelPolicy
    from proxy.upstream.redact import Redactor

    pricing = Pricing(config(prices={"vllm": PRICE}))
    runner = ProbeRunner({}, pricing, Redactor((), {}), "r")
    probe = ModelPolicy().probe
    short = runner.estimate_usd(Pair("m", "vllm"), "gpt-4o-mini", probe)
    long = runner.estimate_usd(Pair("m", "vllm"), "gpt-4o-mini", probe, 4000)
    assert long == pytest.approx(4000 * 2e-6 + probe.max_tokens * 8e-6, rel=0.02)
    assert long > 50 * short
