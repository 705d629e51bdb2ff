"""Cost end to end: a request's cost is its reported tokens x its pair's price (in the
x-ttft-router-cost-usd header of a whole answer, the decision log and
ttft_router_cost_usd_total), a stream is metered without changing its shape, and the
policy's cost objective picks the cheaper pair under the ceiling, the faster above it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.core.domain import Pair
from proxy.settings.config import ServerConfig
from proxy.simulator import Market
from tests.e2e.conftest import Proxy, config_for, policy_file, running_proxy, scenario
from tests.helpers import wait_until

MESSAGES = [{"role": "user", "content": "what does it cost to say hello"}]
PRICE = (2.0, 8.0)  # USD per million tokens, prompt / completion


def behaviour(median_s: float) -> dict[str, Any]:
    return {"warm_ttft": {"median_s": median_s, "sigma": 0.05}, "tokens_per_s": 5000}


def market(**medians: float) -> Market:
    return Market(scenario({p: {"org/M-1": behaviour(s)} for p, s in medians.items()}))


def config(m: Market, tmp_path: Path, policy: str, prices: dict[str, tuple[float, float]]) -> Any:
    providers = {
        name: {**entry, "price": {"prompt_per_million": prices[name][0],
                                  "completion_per_million": prices[name][1]}}
        for name, entry in m.provider_configs().items() if name in prices
    }  # fmt: skip
    return config_for(m, {"m": {p: "org/M-1" for p in m.providers}}, extra_providers=providers,
                      policy_file=policy_file(tmp_path, policy),
                      server={"cost_header": True})  # fmt: skip


def expected_usd(prompt: int, completion: int) -> float:
    return (prompt * PRICE[0] + completion * PRICE[1]) / 1e6


async def last_decision(proxy: Proxy, count: int) -> dict[str, Any]:
    async with proxy.admin() as admin:

        async def logged() -> dict[str, Any] | None:
            rows = (await admin.get("/admin/decisions", params={"model": "m"})).json()
            return rows["decisions"][0] if rows["count"] == count else None

        found: dict[str, Any] = await wait_until(logged, timeout=5)
        return found


async def cost_metric(proxy: Proxy) -> float:
    async with proxy.admin() as admin:
        text = (await admin.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("ttft_router_cost_usd_total{"))
    return float(line.rsplit(" ", 1)[1])


async def test_the_cost_of_a_request_is_its_tokens_times_the_price(tmp_path: Path) -> None:
    priced = {"solo": PRICE}
    async with market(solo=0.005) as m, running_proxy(config(m, tmp_path, "{}\n", priced)) as proxy:
        client = proxy.client()
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=7
        )
        usage = raw.parse().usage
        assert usage is not None and usage.completion_tokens == 7
        cost = expected_usd(usage.prompt_tokens, usage.completion_tokens)
        assert float(raw.headers["x-ttft-router-cost-usd"]) == pytest.approx(cost, rel=1e-6)
        assert (await last_decision(proxy, 1))["cost_usd"] == pytest.approx(cost)
        # a stream whose client did not ask for usage keeps its shape, and is metered
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=5, stream=True
        )
        chunks = [c async for c in stream]
        assert all(c.usage is None and c.choices for c in chunks)
        streamed = (await last_decision(proxy, 2))["cost_usd"]
        assert streamed == pytest.approx(expected_usd(usage.prompt_tokens, 5))
        # one that asked gets its usage chunk, and the same cost
        asked = await client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=5, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        tail = [c async for c in asked][-1]
        assert tail.usage is not None and tail.usage.completion_tokens == 5
        assert (await last_decision(proxy, 3))["cost_usd"] == pytest.approx(streamed)
        total = cost + 2 * streamed
        assert await cost_metric(proxy) == pytest.approx(total)


async def test_a_responses_answer_is_metered_streamed_or_whole(tmp_path: Path) -> None:
    """The Responses API names its usage input/output tokens and reports it in the stream's
    response.completed event: both are metered, and the stream keeps every event."""
    priced = {"solo": PRICE}
    async with market(solo=0.005) as m:
        cfg = config(m, tmp_path, "{}\n", priced)
        solo = cfg.providers["solo"].model_copy(update={"responses": True})
        cfg = cfg.model_copy(update={"providers": {"solo": solo}})
        async with running_proxy(cfg) as proxy:
            client = proxy.client()
            whole = await client.responses.with_raw_response.create(
                model="m", input="what does it cost", max_output_tokens=6
            )
            usage = whole.parse().usage
            assert usage is not None and usage.output_tokens == 6
            cost = expected_usd(usage.input_tokens, usage.output_tokens)
            assert float(whole.headers["x-ttft-router-cost-usd"]) == pytest.approx(cost, rel=1e-6)
            assert (await last_decision(proxy, 1))["cost_usd"] == pytest.approx(cost)
            events = [e async for e in await client.responses.create(
                model="m", input="what does it cost", max_output_tokens=4, stream=True
            )]  # fmt: skip
            # at max_output_tokens it ends with response.incomplete, which carries the usage
            assert events[-1].type == "response.incomplete" and events[-1].response.usage
            # every event the provider sent reaches the client, in order
            direct = openai.AsyncOpenAI(base_url=m.base_url("solo"), api_key="key-solo")
            upstream = [e async for e in await direct.responses.create(
                model="org/M-1", input="what does it cost", max_output_tokens=4, stream=True
            )]  # fmt: skip
            assert [e.type for e in events] == [e.type for e in upstream]
            streamed = (await last_decision(proxy, 2))["cost_usd"]
            assert streamed == pytest.approx(expected_usd(usage.input_tokens, 4))
            assert await cost_metric(proxy) == pytest.approx(cost + streamed)


async def test_an_unpriced_model_has_no_cost_and_no_header(tmp_path: Path) -> None:
    async with market(solo=0.005) as m, running_proxy(config(m, tmp_path, "{}\n", {})) as proxy:
        raw = await proxy.client().chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=3
        )
        assert "x-ttft-router-cost-usd" not in raw.headers
        assert (await last_decision(proxy, 1))["cost_usd"] is None


async def test_the_cost_objective_cheaper_under_the_ceiling_faster_above_it(
    tmp_path: Path,
) -> None:
    prices = {"cheap": (0.5, 1.0), "fast": (5.0, 15.0)}
    policy = ("defaults:\n  objective: p50\n  exploration_share: 0\n  cost: {ceiling_s: 1.0}\n"
              "  client_controls: [only]\n")  # fmt: skip
    async with market(cheap=0.06, fast=0.004) as m:
        cfg = config(m, tmp_path, policy, prices)
        async with running_proxy(cfg) as proxy:
            client = proxy.client()
            for provider in ("cheap", "fast"):  # measure both pairs
                for _ in range(8):
                    await client.chat.completions.create(
                        model="m", messages=MESSAGES, max_tokens=2,
                        extra_body={"provider": {"only": [provider]}},
                    )  # fmt: skip
            board = proxy.services.scoreboard
            await wait_until(
                lambda: all((s := board.snapshot.get(Pair("m", p))) is not None and s.n == 8
                            for p in prices), timeout=10,
            )  # fmt: skip

            async def served() -> str:
                raw = await client.chat.completions.with_raw_response.create(
                    model="m", messages=MESSAGES, max_tokens=2
                )
                return str(raw.headers["x-ttft-router-provider"])

            assert [await served() for _ in range(3)] == ["cheap"] * 3  # both under 1 s
            decision = await last_decision(proxy, 19)
            assert decision["controls"] == ["cost objective: cheapest with p50 under 1 s"]
            # a ceiling the cheap pair's median is above: the faster pair
            path = tmp_path / "policy.yaml"
            path.write_text(policy.replace("ceiling_s: 1.0", "ceiling_s: 0.03"))
            async with proxy.admin() as admin:
                assert (await admin.post("/admin/policy/reload")).status_code == 200
            assert [await served() for _ in range(3)] == ["fast"] * 3
            # under no pair's median: the fastest
            path.write_text(policy.replace("ceiling_s: 1.0", "ceiling_s: 0.0001"))
            async with proxy.admin() as admin:
                assert (await admin.post("/admin/policy/reload")).status_code == 200
            assert await served() == "fast"
            decision = await last_decision(proxy, 23)
            assert decision["controls"] == [
                "cost objective: no pair's p50 under 0.0001 s, the fastest"]  # fmt: skip


async def test_the_cost_header_is_off_unless_the_operator_turns_it_on(tmp_path: Path) -> None:
    """It is usage x the configured price: with the token counts, a client reads the price."""
    async with market(a=0.01) as m:
        quiet = config(m, tmp_path, "defaults: {}", {"a": (1.0, 2.0)}).model_copy(
            update={"server": ServerConfig()}
        )
        async with running_proxy(quiet) as proxy:
            raw = await proxy.client().chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert "x-ttft-router-cost-usd" not in raw.headers
            assert (await last_decision(proxy, 1))["cost_usd"] > 0  # the operator still sees it
