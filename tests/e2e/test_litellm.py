"""A `kind: litellm` provider goes through litellm (imported lazily, local price map) and is
measured and routed like any other. litellm's own OpenAI client talks to the simulator."""

from __future__ import annotations

from proxy.core.domain import Pair
from proxy.simulator import Market
from tests.e2e.conftest import config_for, running_proxy, scenario
from tests.helpers import wait_until

FAST = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}


async def test_litellm_provider_streams_and_is_measured() -> None:
    async with Market(scenario({"sim": {"org/lite-1": FAST}})) as market:
        lite = {
            "kind": "litellm",
            "litellm_provider": "openai",
            "api_base": market.base_url("sim"),
            "api_key": market.api_key("sim"),
        }
        config = config_for(market, {"lite": {"via-litellm": "org/lite-1"}},
                            extra_providers={"via-litellm": lite})  # fmt: skip
        async with running_proxy(config) as proxy:
            client = proxy.client()
            stream = await client.chat.completions.create(
                model="lite", messages=[{"role": "user", "content": "hello"}],
                stream=True, max_tokens=5,
            )  # fmt: skip
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert len(text.split()) == 5
            whole = await client.chat.completions.create(
                model="lite", messages=[{"role": "user", "content": "hello"}], max_tokens=5
            )
            assert whole.choices[0].message.content == text
            assert whole.model == "lite"
            board = proxy.services.scoreboard
            await wait_until(
                lambda: (s := board.snapshot.get(Pair("lite", "via-litellm"))) and s.n == 2,
                timeout=10,
            )
            assert market.stats("sim")["requests"] == 2
