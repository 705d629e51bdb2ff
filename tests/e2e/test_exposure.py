"""What the public port tells whoever asks (issue 24, item 8): /readyz says ready or degraded
and nothing about the store, /metrics needs the admin key (or the admin listener), and an
error about a max price names the client's limit, never the configured price."""

from __future__ import annotations

from pathlib import Path

import httpx

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
from tests.e2e.test_connections import FAST, guarded
from tests.fakes.scripted import closed_port
from tests.helpers import wait_until

HI = [{"role": "user", "content": "hi"}]


async def test_readyz_says_degraded_and_nothing_of_the_store() -> None:
    port = closed_port()
    async with Market(scenario({"p": {"m-p": FAST}})) as market:
        config = config_for(
            market, {"m": {"p": "m-p"}},
            store={"kind": "redis", "url": f"redis://:pw-0123@127.0.0.1:{port}/3"},
        )  # fmt: skip
        async with running_proxy(config) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:

            async def degraded() -> bool:
                return (await http.get("/readyz")).json().get("status") == "degraded"

            await wait_until(degraded, timeout=10)
            reply = await http.get("/readyz")
            assert reply.status_code == 200 and reply.json() == {"status": "degraded"}
            assert str(port) not in reply.text and "127.0.0.1" not in reply.text
            async with proxy.admin() as admin:  # the detail is the operator's
                store = (await admin.get("/admin/status")).json()["store"]
            assert f"127.0.0.1:{port}" in store["detail"] and "pw-0123" not in store["detail"]


async def test_metrics_need_the_admin_key_except_on_the_admin_listener() -> None:
    async with Market(scenario({"p": {"m-p": FAST}})) as market:
        config = config_for(market, {"m": {"p": "m-p"}})
        async with running_proxy(config) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
            anonymous = await http.get("/metrics")
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["code"] == "invalid_api_key"
            client = await http.get("/metrics", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            assert client.status_code == 401
            admin = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert admin.status_code == 200 and "ttft_router_" in admin.text
        listener = config_for(market, {"m": {"p": "m-p"}}, server={"admin_listen": "127.0.0.1:1"})
        async with guarded(listener) as (_, admin_url), httpx.AsyncClient() as http:
            assert admin_url is not None
            assert (await http.get(admin_url + "/metrics")).status_code == 200  # operators' port
            assert (await http.get(admin_url + "/admin/status")).status_code == 401
        public = config_for(market, {"m": {"p": "m-p"}}, server={"public_metrics": True})
        async with running_proxy(public) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
            assert (await http.get("/metrics")).status_code == 200  # loosened on purpose


async def test_a_max_price_refusal_names_the_limit_not_the_price(tmp_path: Path) -> None:
    async with Market(scenario({"p": {"m-p": FAST}})) as market:
        priced = {
            name: {**entry, "price": {"prompt_per_million": 2.75, "completion_per_million": 9.5}}
            for name, entry in market.provider_configs().items()
        }
        grant = policy_file(tmp_path, "defaults: {client_controls: [max_price]}\n")
        config: Config = config_for(market, {"m": {"p": "m-p"}}, extra_providers=priced,
                                    policy_file=grant)  # fmt: skip
        async with running_proxy(config) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
            reply = await http.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": HI, "provider": {"max_price": {"prompt": 1}}},
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            )
            assert reply.status_code == 503, reply.text
            message = reply.json()["error"]["message"]
            assert "over max price: prompt above 1 per million" in message
            assert "2.75" not in reply.text and "9.5" not in reply.text
