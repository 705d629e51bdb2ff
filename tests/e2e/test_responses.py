"""/v1/responses through the proxy, driven by the openai SDK: streamed and whole answers from
simulated providers that serve the Responses API, a TTFT sample per attempt measured at the
first output event, providers without it skipped (with the reason in the decision),
failover before the first output event; and GET /v1/models/{model}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.core.domain import Pair
from proxy.serving.endpoint import RESPONSES_API
from proxy.settings.config import Config
from proxy.simulator import Market
from tests.e2e.conftest import (
    ADMIN_KEY,
    CLIENT_KEY,
    config_for,
    policy_file,
    running_proxy,
    scenario,
)
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

FAST: dict[str, Any] = {"warm_ttft": {"median_s": 0.01, "sigma": 0.1}, "tokens_per_s": 2000}
# Everything before the first delta (response.created, in_progress, the item and part
# announcements) is sent at once; the first delta comes after this TTFT.
SLOW_FIRST = {"warm_ttft": {"median_s": 0.3, "sigma": 0.0}, "tokens_per_s": 2000}
POLICY = "defaults:\n  min_samples: 3\n  exploration_share: 0\n"
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}]  # fmt: skip


def market_of(providers: dict[str, dict[str, Any]], without: tuple[str, ...] = ()) -> Market:
    """Providers serving model "m" as "org/M-1"; those in `without` lack the Responses API."""
    built = scenario({name: {"org/M-1": b} for name, b in providers.items()})
    data = built.model_dump()
    for name in without:
        data["providers"][name]["responses"] = False
    return Market(type(built).model_validate(data))


def models(*providers: str) -> dict[str, dict[str, str]]:
    return {"m": dict.fromkeys(providers, "org/M-1")}


async def test_stream_arrives_renamed_and_its_ttft_is_the_first_delta() -> None:
    async with (
        market_of({"solo": SLOW_FIRST}) as market,
        running_proxy(config_for(market, models("solo"))) as proxy,
    ):
        raw = await proxy.client().responses.with_raw_response.create(
            model="m", input="hello there", stream=True
        )
        assert raw.headers["x-ttft-router-provider"] == "solo"
        assert raw.headers["x-request-id"] and raw.headers["x-ttft-router-attempts"] == "1"
        events = [e async for e in raw.parse()]
        types = [e.type for e in events]
        assert types[:3] == ["response.created", "response.in_progress",
                             "response.output_item.added"]  # fmt: skip
        assert types[-1] == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert len(text.split()) == 16
        final = events[-1].response  # type: ignore[union-attr]
        assert final.output_text == text
        assert final.model == "m" and events[0].response.model == "m"  # type: ignore[union-attr]
        assert final.usage is not None and final.usage.output_tokens == 16
        pair = Pair("m", "solo")
        board = proxy.services.scoreboard
        await wait_until(lambda: pair in board.snapshot and board.snapshot[pair].n == 1, 5)
        async with proxy.admin() as admin:
            rows = (await admin.get("/admin/samples", params={"model": "m"})).json()
        (sample,) = rows["pairs"][0]["samples"]
        # The clock stopped at the first delta, 0.3 s after response.created was sent.
        assert sample["outcome"] == "ok" and 0.3 <= sample["ttft_s"] < 2.0
        row = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
        assert row["attempts"][0]["ttft_s"] >= 0.3


async def test_whole_answer_and_tool_call_equal_the_upstream_answer() -> None:
    async with (
        market_of({"solo": FAST}) as market,
        running_proxy(config_for(market, models("solo"))) as proxy,
    ):
        direct = openai.AsyncOpenAI(base_url=market.base_url("solo"), api_key="key-solo")
        request: dict[str, Any] = {"input": [{"role": "user", "content": "weather in Paris"}],
                                   "max_output_tokens": 6}  # fmt: skip
        upstream = await direct.responses.create(model="org/M-1", **request)
        raw = await proxy.client().responses.with_raw_response.create(model="m", **request)
        assert raw.headers["x-ttft-router-provider"] == "solo"
        answer = raw.parse()
        assert answer.model == "m" and answer.status == upstream.status == "incomplete"
        assert answer.output_text == upstream.output_text and answer.output_text
        assert answer.usage == upstream.usage
        tools: dict[str, Any] = {"tools": TOOLS, "tool_choice": "required"}
        up_tool = await direct.responses.create(model="org/M-1", **request, **tools)
        via_tool = await proxy.client().responses.create(model="m", **request, **tools)
        assert via_tool.output[0].type == "function_call"
        ids = {"id"}  # each answer has its own
        assert via_tool.output[0].model_dump(exclude=ids) == up_tool.output[0].model_dump(
            exclude=ids
        )
        # stream=false is served from an upstream stream: it yields TTFT samples too
        board = proxy.services.scoreboard
        await wait_until(lambda: board.snapshot.get(Pair("m", "solo")) is not None
                         and board.snapshot[Pair("m", "solo")].n == 2, 5)  # fmt: skip


async def test_a_provider_without_the_responses_api_is_skipped(tmp_path: Path) -> None:
    async with market_of({"chat-only": FAST, "full": FAST}, without=("chat-only",)) as market:
        config = config_for(market, models("chat-only", "full"),
                            policy_file=policy_file(tmp_path, POLICY))  # fmt: skip
        async with running_proxy(config) as proxy:
            await proxy.prefer("chat-only", "full")
            client = proxy.client()
            raw = await client.responses.with_raw_response.create(model="m", input="hi")
            assert raw.headers["x-ttft-router-provider"] == "full"
            assert raw.parse().output_text
            stream = await client.responses.create(model="m", input="hi", stream=True)
            assert [e async for e in stream][-1].type == "response.completed"
            assert market.stats("chat-only")["requests"] == 0  # never tried
            row = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
            skipped = {c["provider"]: c["excluded_because"] for c in row["candidates"]}
            assert skipped == {"full": None, "chat-only": RESPONSES_API.unserved_reason}
            assert row["reason"].startswith("full has the lowest")  # ranked among servers
            assert [a["provider"] for a in row["attempts"]] == ["full"]
            # chat still goes to the preferred provider
            chat = await client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert chat.headers["x-ttft-router-provider"] == "chat-only"


async def test_no_provider_with_the_responses_api_is_a_400() -> None:
    async with (
        market_of({"chat-only": FAST}, without=("chat-only",)) as market,
        running_proxy(config_for(market, models("chat-only"))) as proxy,
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await proxy.client().responses.create(model="m", input="hi")
        assert "no provider serving /v1/responses" in caught.value.message
        assert market.stats("chat-only")["requests"] == 0


async def test_a_provider_answering_404_on_responses_is_failed_over(tmp_path: Path) -> None:
    """Configured as serving it, but it does not (the simulator's 404): the next one serves."""
    async with market_of({"chat-only": FAST, "full": FAST}, without=("chat-only",)) as market:
        claims = {**market.provider_configs()["chat-only"], "responses": True}
        config = config_for(market, models("chat-only", "full"),
                            extra_providers={"chat-only": claims},
                            policy_file=policy_file(tmp_path, POLICY))  # fmt: skip
        async with running_proxy(config) as proxy:
            await proxy.prefer("chat-only", "full")
            raw = await proxy.client().responses.with_raw_response.create(
                model="m", input="hi", stream=True
            )
            assert raw.headers["x-ttft-router-provider"] == "full"
            assert raw.headers["x-ttft-router-attempts"] == "2"
            assert [e async for e in raw.parse()][-1].type == "response.completed"
            row = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
            attempts = [(a["provider"], a["status"]) for a in row["attempts"]]
            assert attempts == [("chat-only", 404), ("full", None)]


async def test_failover_before_the_first_output_event(tmp_path: Path) -> None:
    """The first provider sends response.created and the item announcements, then nothing:
    those are not output, so the proxy has not committed to it and fails over."""
    hangs = FAST | {"hang_rate": 1.0}
    async with market_of({"stuck": hangs, "good": FAST}) as market:
        stuck = {**market.provider_configs()["stuck"], "timeouts": {"first_token_s": 0.5}}
        config = config_for(market, models("stuck", "good"), extra_providers={"stuck": stuck},
                            policy_file=policy_file(tmp_path, POLICY))  # fmt: skip
        async with running_proxy(config) as proxy:
            await proxy.prefer("stuck", "good")
            raw = await proxy.client().responses.with_raw_response.create(
                model="m", input="hi", stream=True
            )
            assert raw.headers["x-ttft-router-provider"] == "good"
            events = [e async for e in raw.parse()]
            # one stream, from one provider: a single response.created, the winner's
            assert [e.type for e in events].count("response.created") == 1
            assert events[0].response.id.startswith("resp-good-")  # type: ignore[union-attr]
            row = await proxy.decision(raw.headers["x-ttft-router-decision-id"])
            outcomes = [(a["provider"], a["outcome"]) for a in row["attempts"]]
            assert outcomes == [("stuck", "timeout"), ("good", "ok")]


async def test_a_providers_extra_fields_pass_through_untouched(tmp_path: Path) -> None:
    async with scripted_provider() as upstream:
        config = Config.model_validate({
            "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
            "providers": {"p0": {"kind": "openai", "base_url": upstream.base_url,
                                 "api_key": "k", "responses": True,
                                 "stream_for_non_stream": False, "extra_fields": ["x_custom"]}},
            "models": {"m": {"providers": {"p0": "u"}}},
            "prober": {"enabled": False},
        })  # fmt: skip
        async with running_proxy(config) as proxy:
            body = {"model": "m", "input": [{"role": "user", "content": "hi"}],
                    "store": False, "x_custom": {"nested": [1, "two"]}}  # fmt: skip
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
                answer = await http.post(
                    "/v1/responses", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
                )
            assert answer.status_code == 200
            (seen,) = upstream.requests
            assert seen.path == "/v1/responses"
            assert seen.body == {**body, "model": "u"}


async def test_models_retrieve() -> None:
    async with (
        market_of({"solo": FAST}) as market,
        running_proxy(config_for(market, models("solo"))) as proxy,
    ):
        client = proxy.client()
        model = await client.models.retrieve("m")
        assert (model.id, model.object, model.owned_by) == ("m", "model", "ttft-router")
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("nope")
        assert caught.value.code == "model_not_found"
        assert "model 'nope' is not configured (known: m)" in caught.value.message
        with pytest.raises(openai.AuthenticationError):
            await proxy.client(api_key="wrong").models.retrieve("m")


async def test_a_break_after_the_first_output_event_ends_with_an_error_event() -> None:
    drops = FAST | {"drop_midstream_rate": 1.0}
    async with (
        market_of({"solo": drops}) as market,
        running_proxy(config_for(market, models("solo"))) as proxy,
    ):
        stream = await proxy.client().responses.create(model="m", input="hi", stream=True)
        seen: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            async for event in stream:
                seen.append(event.type)
        assert "response.output_text.delta" in seen  # the first token reached the client
        assert "broke after the first token" in caught.value.message
        board = proxy.services.scoreboard
        pair = Pair("m", "solo")
        await wait_until(lambda: pair in board.snapshot and board.snapshot[pair].n == 1, 5)
        assert board.snapshot[pair].n_errors == 1  # a stream error, with its TTFT kept
