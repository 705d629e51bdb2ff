"""Errors of both surfaces (the direct /v1 POST path and FastAPI's routes) leave through one
renderer: OpenAI's shape, the request id, the status the SDK maps."""

from __future__ import annotations

import httpx

from proxy.simulator import Market
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, config_for, running_proxy, scenario
from tests.fakes.scripted import closed_port

FAST = {"warm_ttft": {"median_s": 0.01}}


def solo() -> Market:
    return Market(scenario({"solo": {"u": FAST}}))


async def test_other_methods_on_a_v1_post_path_are_405_in_openai_shape() -> None:
    config = {"m": {"solo": "u"}}
    async with (
        solo() as market,
        running_proxy(config_for(market, config)) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=10) as http,
    ):
        for path in ("/v1/chat/completions", "/v1/responses"):
            answer = await http.get(path, headers={"x-request-id": "req-1"})
            assert answer.status_code == 405 and answer.headers["allow"] == "POST"
            assert answer.headers["x-request-id"] == "req-1"
            error = answer.json()["error"]
            assert error["code"] == "method_not_allowed" and error["request_id"] == "req-1"
        # the direct path and FastAPI's render the same error the same way
        direct = await http.post("/v1/chat/completions", json={})
        routed = await http.get("/v1/models")
        assert direct.status_code == routed.status_code == 401
        assert direct.json()["error"].keys() == routed.json()["error"].keys()
        assert direct.headers["content-type"] == routed.headers["content-type"]


async def test_decisions_answer_store_unavailable_when_the_store_is_down() -> None:
    store = {"kind": "redis", "url": f"redis://127.0.0.1:{closed_port()}/0",
             "connect_timeout_s": 0.2, "socket_timeout_s": 0.2}  # fmt: skip
    async with solo() as market:
        config = config_for(market, {"m": {"solo": "u"}}, store=store)
        async with running_proxy(config) as proxy:
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            async with httpx.AsyncClient(base_url=proxy.url, headers=headers, timeout=10) as http:
                answer = await http.get("/admin/decisions")
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert error["code"] == "store_unavailable"
            assert error["type"] == "service_unavailable_error"
            assert "decision log is unreachable" in error["message"]
            # requests are still served without the store
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
                chat = await http.post(
                    "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                )  # fmt: skip
            assert chat.status_code == 200
