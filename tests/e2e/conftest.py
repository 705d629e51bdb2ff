"""End-to-end fixtures: simulated providers (real aiohttp servers streaming real SSE) and
the proxy (real uvicorn server), both on 127.0.0.1, driven through the official openai SDK."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from fastapi import FastAPI

from proxy.api.context import Services
from proxy.app import create_app
from proxy.core.domain import Outcome, Sample
from proxy.settings.auth import CLIENT_CONTROLS
from proxy.settings.config import Config
from proxy.settings.policy import PolicyHolder
from proxy.simulator import Market, Scenario
from tests.fakes.scripted import ScriptedProvider
from tests.helpers import serve_app, wait_until

CLIENT_KEY = "test-client-key-0123456789abcdef"
ADMIN_KEY = "test-admin-key-fedcba9876543210"
# `auth` whose key (the client "anonymous") is granted every request control
STEERING_KEY = {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY],
                "anonymous": {"controls": list(CLIENT_CONTROLS)}}  # fmt: skip


@dataclass
class Proxy:
    url: str
    app: FastAPI

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    def client(self, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("api_key", CLIENT_KEY)
        return openai.AsyncOpenAI(base_url=self.url + "/v1", max_retries=0, **kw)

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )

    async def prefer(self, first: str, then: str, model: str = "m") -> None:
        """Give both pairs a history (`first` faster) and wait until routing would choose
        `first` (seeded through the proxy's own sample buffer, for tests about what happens
        next rather than about how warm-up traffic spreads)."""
        now = time.time()
        for i in range(10):
            for provider, ttft in ((first, 0.005), (then, 0.05)):
                sample = Sample(model, provider, Outcome.OK, ttft, now - 10 + i, total_s=ttft)
                self.services.buffer.add_sample(sample)

        async def chooses_first() -> bool:
            async with self.admin() as admin:
                view = (await admin.get("/admin/explain", params={"model": model})).json()
            return bool(view["would_choose"] == first)

        await wait_until(chooses_first, timeout=5)

    async def decision(self, decision_id: str, model: str = "m") -> dict[str, Any]:
        """The decision log's row for `decision_id`, once it is written."""

        async def found() -> dict[str, Any] | None:
            async with self.admin() as admin:
                rows = (await admin.get("/admin/decisions", params={"model": model})).json()
            return next((d for d in rows["decisions"] if d["id"] == decision_id), None)

        row: dict[str, Any] = await wait_until(found, timeout=5)
        return row


def scenario(providers: dict[str, dict[str, Any]], **kw: Any) -> Scenario:
    """A scenario from {provider: {upstream model id: behaviour dict}}; keys key-<provider>."""
    return Scenario.model_validate(
        {
            "providers": {
                name: {"api_key": f"key-{name}", "models": models}
                for name, models in providers.items()
            },
            **kw,
        }
    )


def config_for(
    market: Market,
    models: dict[str, dict[str, str]],
    *,
    extra_providers: dict[str, dict[str, Any]] | None = None,
    policy_file: Path | None = None,
    **overrides: Any,
) -> Config:
    providers: dict[str, Any] = {**market.provider_configs(), **(extra_providers or {})}
    data: dict[str, Any] = {
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "providers": providers,
        "models": {m: {"providers": p} for m, p in models.items()},
        "buffer": {"flush_interval_s": 0.02},
        "scoreboard": {"refresh_s": 0.05},
        "policies": [str(policy_file)] if policy_file else [],
        # Off unless a test turns it on: other tests count attempts and samples exactly.
        "prober": {"enabled": False},
        **overrides,
    }
    return Config.model_validate(data)


@contextlib.asynccontextmanager
async def running_proxy(
    config: Config, policies: PolicyHolder | None = None
) -> AsyncIterator[Proxy]:
    app = create_app(config, policies)
    async with serve_app(app) as url:
        yield Proxy(url, app)


def policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def scripted_config(
    tmp_path: Path, policy: str, *providers: ScriptedProvider,
    settings: dict[str, dict[str, Any]] | None = None,
) -> Config:  # fmt: skip
    """Model "m" on scripted providers p0, p1, ... (in that order), with `policy` (YAML);
    `settings`: more config fields per provider name."""
    more = settings or {}
    return Config.model_validate({
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "providers": {f"p{i}": {"kind": "openai", "base_url": p.base_url, "api_key": "k",
                                **more.get(f"p{i}", {})}
                      for i, p in enumerate(providers)},
        "models": {"m": {"providers": {f"p{i}": "u" for i in range(len(providers))}}},
        "buffer": {"flush_interval_s": 0.02},
        "scoreboard": {"refresh_s": 0.05},
        "prober": {"enabled": False},  # exact request counts
        "policies": [str(policy_file(tmp_path, policy))],
    })  # fmt: skip
