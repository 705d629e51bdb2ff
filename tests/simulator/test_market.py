"""Market lifecycle: loopback ports, fixed ports, clean stop, unknown providers."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from proxy.simulator import Market, Scenario

from .support import scenario_of


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fixed_port_scenario(port: int) -> Scenario:
    return Scenario.model_validate(
        {
            "providers": {
                "fixed": {
                    "api_key": "k",
                    "port": port,
                    "models": {"m": {"warm_ttft": {"median_s": 0.1}}},
                }
            }
        }
    )


async def test_base_url_is_loopback_and_stop_closes_the_port() -> None:
    market = Market(scenario_of({"m": {"warm_ttft": {"median_s": 0.1}}}))
    async with market:
        url = market.base_url("sim-a")
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with (
            aiohttp.ClientSession() as http,
            http.get(url.removesuffix("/v1") + "/stats") as r,
        ):
            assert r.status == 200
    with pytest.raises(KeyError, match="not serving"):
        market.base_url("sim-a")
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(url.rsplit(":", 1)[1].removesuffix("/v1"))))


async def test_fixed_port_is_used_and_a_taken_one_fails_cleanly() -> None:
    port = free_port()
    async with Market(fixed_port_scenario(port)) as market:
        assert market.port("fixed") == port
        second = Market(fixed_port_scenario(port))
        with pytest.raises(OSError):
            await second.start()
        with pytest.raises(KeyError):
            second.port("fixed")


async def test_unknown_provider_names_the_serving_ones() -> None:
    async with Market(scenario_of({"m": {"warm_ttft": {"median_s": 0.1}}})) as market:
        with pytest.raises(KeyError, match="sim-a"):
            market.stats("nobody")
        assert market.providers == ("sim-a",)
        assert market.api_key("sim-a") == "key-a"
