"""The market: every provider of a scenario served on 127.0.0.1, started and stopped together.

Owns the aiohttp runners and the listening sockets (pre-bound, so port 0 gets a free port
known before the first request), and in-process access to each provider's URL, key and
counters. Owns no behaviour of its own.
"""

from __future__ import annotations

import socket
from types import TracebackType

from aiohttp import web

from proxy.simulator.provider import ProviderStats
from proxy.simulator.scenario import Scenario
from proxy.simulator.server import PROVIDER_KEY, build_provider_app

HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT_S = 2.0


class Market:
    """Simulated providers of ``scenario``, serving while the context is open.

    ``async with Market(scenario) as market:`` then ``market.base_url("provider-a")`` is
    ``http://127.0.0.1:PORT/v1`` and ``market.api_key("provider-a")`` its key.
    """

    def __init__(self, scenario: Scenario, host: str = HOST) -> None:
        self.scenario = scenario
        self.host = host
        self._runners: dict[str, web.AppRunner] = {}
        self._ports: dict[str, int] = {}

    @property
    def providers(self) -> tuple[str, ...]:
        """Provider names, in scenario order."""
        return tuple(self.scenario.providers)

    async def __aenter__(self) -> Market:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and serve every provider; on any failure, stop those already started."""
        try:
            for name, provider in self.scenario.providers.items():
                app = build_provider_app(
                    name, provider, self.scenario.time_scale, self.scenario.seed
                )
                sock = _bound_socket(self.host, provider.port)
                runner = web.AppRunner(
                    app,
                    handler_cancellation=True,
                    shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                    access_log=None,
                )
                self._runners[name] = runner
                await runner.setup()
                await web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_TIMEOUT_S).start()
                self._ports[name] = sock.getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every provider; requests still open are cancelled (and counted aborted)."""
        runners, self._runners = self._runners, {}
        self._ports.clear()
        for runner in runners.values():
            await runner.cleanup()

    def port(self, provider: str) -> int:
        """The port ``provider`` listens on."""
        try:
            return self._ports[provider]
        except KeyError:
            raise KeyError(
                f"provider {provider!r} is not serving (serving: {', '.join(self._ports)})"
            ) from None

    def base_url(self, provider: str) -> str:
        """The OpenAI ``base_url`` of ``provider``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port(provider)}/v1"

    def api_key(self, provider: str) -> str:
        """The key clients of ``provider`` must send as ``Authorization: Bearer <key>``."""
        return self.scenario.providers[provider].api_key

    def provider_configs(self) -> dict[str, dict[str, str | bool]]:
        """The config.yaml `providers` entries (kind openai) that reach this market, each
        with `responses` as its scenario says."""
        return {
            name: {
                "kind": "openai",
                "base_url": self.base_url(name),
                "api_key": self.api_key(name),
                "responses": provider.responses,
            }
            for name, provider in self.scenario.providers.items()
        }

    def stats(self, provider: str) -> ProviderStats:
        """A snapshot of ``provider``'s counters, read in-process (same shape as ``/stats``)."""
        self.port(provider)
        return self._runners[provider].app[PROVIDER_KEY].stats()

    def reset_stats(self) -> None:
        """Zero the counters of every provider."""
        for runner in self._runners.values():
            runner.app[PROVIDER_KEY].reset_stats()


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
