"""`ttft-router demo`: MISSION.md's simulated market plus the proxy on loopback, no keys needed.

Starts the three simulated providers, the proxy (in-memory store) on `--port`, and a little
background traffic so that scores fill in; prints how to use it; stops cleanly on Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import signal
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
import uvicorn
import uvloop

from proxy.app import create_app
from proxy.settings.config import Config
from proxy.settings.policy import ColdStart, ModelPolicy, PolicyHolder, PolicySet, Uncertainty
from proxy.simulator import Market, load_scenario


@dataclass(frozen=True)
class DemoKeys:
    """The demo's client and admin keys: new random ones each run (a fixed key in public
    source would be everyone's key)."""

    client: str
    admin: str

    @classmethod
    def random(cls) -> DemoKeys:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24))


# Public model -> provider -> that provider's own model id (as in scenarios/mission.yaml).
MISSION_MODELS: dict[str, dict[str, str]] = {
    "deepseek-v4-pro": {
        "provider-a": "deepseek-ai/DeepSeek-V4-Pro",
        "provider-b": "accounts/b/models/deepseek-v4-pro",
        "provider-c": "deepseek-v4-pro-fp8",
    },
    "kimi-k2.6": {
        "provider-a": "moonshotai/Kimi-K2.6",
        "provider-b": "accounts/b/models/kimi-k2p6",
        "provider-c": "kimi-k2.6-int4",
    },
}


def mission_config(market: Market, port: int, keys: DemoKeys, time_scale: float = 1.0) -> Config:
    """The demo's config; the prober runs at the market's `time_scale` (docs/probing.md)."""
    return Config.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": port, "replica_id": "demo"},
            "auth": {"api_keys": [keys.client], "admin_keys": [keys.admin]},
            "providers": market.provider_configs(),
            "models": {m: {"providers": p} for m, p in MISSION_MODELS.items()},
            "prober": {"time_scale": time_scale},
        }
    )


def demo_policies(time_scale: float) -> PolicyHolder:
    """Built-in defaults, with the cold-start floor and the evidence half-life scaled like the
    simulated delays."""
    half_life = ModelPolicy().uncertainty.half_life_s * time_scale
    default = ModelPolicy(
        cold_start=ColdStart(floor_s=2.0 * time_scale),
        uncertainty=Uncertainty(half_life_s=half_life),
    )
    return PolicyHolder([], PolicySet(default=default))


def banner(port: int, keys: DemoKeys, time_scale: float, traffic_rps: float) -> str:
    base = f"http://127.0.0.1:{port}"
    body = (
        '{"model":"deepseek-v4-pro","messages":[{"role":"user","content":"Hello"}],"stream":true}'
    )
    return f"""
ttft-router demo: simulated providers provider-a, provider-b, provider-c
(MISSION.md's market, delays x{time_scale}) behind the proxy, in-memory store.

  base_url   {base}/v1
  api key    {keys.client}
  models     {", ".join(MISSION_MODELS)}

  curl -N {base}/v1/chat/completions -H "Authorization: Bearer {keys.client}" \\
       -H "Content-Type: application/json" -d '{body}'

  python -c 'from openai import OpenAI
c = OpenAI(base_url="{base}/v1", api_key="{keys.client}")
r = c.chat.completions.with_raw_response.create(model="kimi-k2.6",
        messages=[{{"role": "user", "content": "Hello"}}])
print(r.headers["x-ttft-router-provider"], r.parse().choices[0].message.content)'

  dashboard  {base}/dashboard (sign in with the admin key {keys.admin})

  admin (key {keys.admin}):
    curl -H "Authorization: Bearer {keys.admin}" {base}/admin/scores
    curl -H "Authorization: Bearer {keys.admin}" "{base}/admin/explain?model=kimi-k2.6"
    curl -H "Authorization: Bearer {keys.admin}" "{base}/admin/decisions?limit=5"
    curl -H "Authorization: Bearer {keys.admin}" {base}/metrics

Background traffic: {traffic_rps:g} requests/s so that scores fill in (--traffic 0 for none).
Ctrl-C or SIGTERM stops everything.
""".strip("\n")


async def background_traffic(base: str, key: str, rps: float, stop: asyncio.Event) -> None:
    """Send `rps` streamed requests/s to random models until `stop` (at most 16 in flight)."""
    slots = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {key}"}
    rng = random.Random()
    tasks: set[asyncio.Task[Any]] = set()

    async def one(session: aiohttp.ClientSession) -> None:
        body = {
            "model": rng.choice(list(MISSION_MODELS)),
            "messages": [{"role": "user", "content": "background traffic"}],
            "stream": True,
            "max_tokens": 4,
        }
        try:
            async with session.post(f"{base}/v1/chat/completions", json=body) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass  # the proxy records its own view of failures; the demo carries on
        finally:
            slots.release()

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        while not stop.is_set():
            await slots.acquire()
            task = asyncio.create_task(one(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=rng.expovariate(rps))
        for task in list(tasks):
            task.cancel()


async def _demo(port: int, time_scale: float, traffic_rps: float) -> None:
    scenario = load_scenario(str(resources.files("proxy") / "scenarios" / "mission.yaml"))
    async with Market(scenario.with_time_scale(time_scale)) as market:
        keys = DemoKeys.random()
        config = mission_config(market, port, keys, time_scale)
        app = create_app(config, demo_policies(time_scale))
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
            await asyncio.sleep(0.05)
        if serving.done():
            serving.result()
            raise SystemExit(f"the proxy could not start on port {port}")
        print(banner(port, keys, time_scale, traffic_rps), flush=True)
        traffic = None
        if traffic_rps > 0:
            traffic = asyncio.create_task(
                background_traffic(f"http://127.0.0.1:{port}", keys.client, traffic_rps, stop)
            )
        await serving
        stop.set()
        if traffic is not None:
            await traffic
    print("ttft-router demo stopped.", flush=True)


def run_demo(port: int, time_scale: float, traffic_rps: float) -> int:
    # uvicorn handles SIGINT/SIGTERM and re-raises them after a graceful shutdown; these
    # handlers receive that re-raise, so the market is stopped and the exit code is 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvloop.run(_demo(port, time_scale, traffic_rps))
    return 0
