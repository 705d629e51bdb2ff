"""create_app(config): builds every object once, runs the background loops in the lifespan.

No module-level state: each call returns a fresh app (tests build one per case). The
aiohttp session, store, buffer flusher, scoreboard loop and prober start with the app and stop
with a bounded drain, logging whatever could not be written.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from proxy.api import admin, clients, dashboard, health, openai
from proxy.api.auth import KeySet
from proxy.api.context import Services
from proxy.api.errors import install_error_handlers
from proxy.api.session import Sessions
from proxy.clients import ClientsHolder, Gate
from proxy.core import requestid
from proxy.core.domain import Pair
from proxy.core.errors import ConfigError
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.base import Store
from proxy.learning.store.buffer import SampleBuffer
from proxy.learning.store.memory import MemoryStore
from proxy.probing.prober import Prober
from proxy.probing.runner import ProbeRunner
from proxy.routing import Routing
from proxy.serving.dispatch import Dispatcher, ProviderUpstream
from proxy.serving.endpoint import BY_ROUTE, ENDPOINTS
from proxy.serving.recorder import Recorder
from proxy.settings.config import Config, LiteLLMProvider, OpenAIProvider, RedisStoreConfig
from proxy.settings.policy import PolicyHolder
from proxy.settings.pricing import Pricing
from proxy.telemetry.metrics import ExportSink, Metrics
from proxy.upstream.base import Upstream
from proxy.upstream.litellm_adapter import LiteLLMUpstream, litellm_price, preload_litellm
from proxy.upstream.openai_compat import OpenAICompatUpstream, make_session
from proxy.upstream.redact import from_config as redact_from_config
from proxy.upstream.redact import redact_logs

if TYPE_CHECKING:
    import aiohttp  # the session's type; aiohttp itself lives in upstream/

log = logging.getLogger("ttft_router.app")
SHUTDOWN_DRAIN_S = 5.0


def create_app(config: Config, policies: PolicyHolder | None = None) -> ProxyApp:
    holder = policies or PolicyHolder(config.policy_paths(), providers=config.providers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if any(isinstance(p, LiteLLMProvider) for p in config.providers.values()):
            preload_litellm()  # ~3.5 s, once, before serving: no request (or sample) pays it
        session = make_session()
        svc = build_services(config, holder, session)
        if svc.pricing.needs_litellm:  # litellm's price map, read once (imports it)
            await asyncio.to_thread(svc.pricing.resolve)
        app.state.services = svc
        await svc.store.start()
        stop = asyncio.Event()
        loops = [
            asyncio.create_task(svc.buffer.run(stop), name="buffer-flusher"),
            asyncio.create_task(svc.scoreboard.run(stop), name="scoreboard"),
            asyncio.create_task(svc.prober.run(stop), name="prober"),
            asyncio.create_task(svc.gate.run(stop), name="client-charges"),
            asyncio.create_task(svc.clients.run(stop), name="clients-reload"),
        ]
        log.info(
            "ttft-router replica %s up: %d models, %d providers, %s store",
            svc.replica, len(config.models), len(config.providers), config.store.kind,
        )  # fmt: skip
        try:
            yield
        finally:
            stop.set()
            _, pending = await asyncio.wait(loops, timeout=SHUTDOWN_DRAIN_S)
            for task in pending:
                log.warning("shutdown: cancelling %s after %.0f s", task.get_name(),
                            SHUTDOWN_DRAIN_S)  # fmt: skip
                task.cancel()
            await svc.buffer.drain(SHUTDOWN_DRAIN_S)
            await svc.gate.drain(SHUTDOWN_DRAIN_S)
            await svc.store.close()
            await session.close()
            if svc.metrics.export is not None:
                await asyncio.to_thread(svc.metrics.export.shutdown)  # a last push

    app = ProxyApp(
        title="ttft-router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.include_router(openai.router)
    app.include_router(admin.router)
    app.include_router(clients.router)
    app.include_router(dashboard.router)  # with the admin API, wherever it is served
    app.include_router(health.router)
    install_error_handlers(app)
    return app


class ProxyApp(FastAPI):
    """FastAPI, except that the /v1 POST routes skip its stack.

    FastAPI 0.165's middleware, router matching, dependency solving, telemetry check and
    the send wrappers around every streamed chunk cost about a fifth of the CPU of a
    streamed request (py-spy, docs/performance.md), so an exact /v1 POST path
    (`serving.endpoint.BY_ROUTE`) is served straight from ASGI by `openai.serve_direct` and is
    not registered with FastAPI at all. Everything else (admin, health, /v1/models, other
    methods and paths on /v1, lifespan) is FastAPI as usual. Errors leave both ways through
    one renderer (`api.errors.render_error`).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # Every HTTP request gets its id first: in the context (log lines, decision, error
        # bodies) and in the response's x-request-id (proxy.core.requestid).
        request_id = requestid.from_headers(scope["headers"])
        token = requestid.REQUEST_ID.set(request_id)
        client = requestid.CLIENT.set(None)  # named once its key is checked
        try:
            endpoint = BY_ROUTE.get(scope["path"])
            if endpoint is not None:  # any method: serve_direct answers 405 to all but POST
                scope["app"] = self
                await openai.serve_direct(scope, receive, send, endpoint)  # sets the header
                return
            await super().__call__(scope, receive, requestid.with_header(send, request_id))
        finally:
            requestid.CLIENT.reset(client)
            requestid.REQUEST_ID.reset(token)


def build_services(
    config: Config, policies: PolicyHolder, session: aiohttp.ClientSession
) -> Services:
    replica = config.server.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    seeds = random.Random(config.routing.seed)  # seeded: a run can be replayed
    metrics = Metrics()
    store = build_store(config, replica)
    buffer = SampleBuffer(config.buffer, store)
    buffer.on_drop(lambda item: metrics.dropped.labels(item).inc())
    configured = [Pair(m, p) for m, entry in config.models.items() for p in entry.providers]
    scoreboard = Scoreboard(
        store, policies, refresh_s=config.scoreboard.refresh_s,
        rng=random.Random(seeds.getrandbits(64)), pairs=configured,
    )  # fmt: skip
    pairs = {model: dict(entry.providers) for model, entry in config.models.items()}
    pricing = Pricing(config, litellm_price)  # probes, controls, the cost of each request
    routing = Routing(
        policies, scoreboard, pairs, pricing, rng=random.Random(seeds.getrandbits(64)),
        probing=config.prober.enabled,
    )  # fmt: skip
    redact = redact_from_config(config)
    upstreams = {
        name: ProviderUpstream(
            upstream=build_upstream(name, provider, session),
            first_token_s=provider.timeouts.first_token_s,
            streams_for_non_stream=isinstance(provider, OpenAIProvider)
            and provider.stream_for_non_stream,
            extra_fields=frozenset(provider.extra_fields),
        )
        for name, provider in config.providers.items()
    }
    metrics.watch(health.StateCollector(scoreboard, buffer, store))
    recorder = Recorder(buffer, routing, metrics, replica)
    dispatcher = Dispatcher(upstreams, recorder, redact)
    metrics.watch_hedge_budgets(dispatcher.hedge_budgets.left)
    if config.telemetry.otlp.enabled:
        metrics.export = build_otlp_export(config, replica)
    runner = ProbeRunner(
        {name: u.upstream for name, u in upstreams.items()}, pricing, redact, replica
    )
    prober = Prober(config, policies, scoreboard, routing, runner, buffer, store, metrics)
    metrics.watch(health.ProberCollector(prober))
    return Services(
        config=config,
        policies=policies,
        pairs=pairs,
        served_by={e.name: e.served_by(config.providers) for e in ENDPOINTS},
        extra_fields={n: frozenset(p.extra_fields) for n, p in config.providers.items()},
        store=store,
        buffer=buffer,
        scoreboard=scoreboard,
        routing=routing,
        dispatcher=dispatcher,
        metrics=metrics,
        prober=prober,
        replica=replica,
        clients=ClientsHolder(config),
        gate=Gate(store, metrics, config.auth.fallback_share),
        admin_keys=KeySet(k.get_secret_value() for k in config.auth.admin_keys),
        pricing=pricing,
        sessions=Sessions(store, config.auth.session_lifetime_s, config.auth.session_cookie_secure),
    )


def build_otlp_export(config: Config, replica: str) -> ExportSink:
    """The OTLP exporter (proxy.telemetry.otel); its packages are imported only here."""
    try:
        from proxy.telemetry.otel import OtlpExport
    except ImportError as exc:
        raise ConfigError(
            f"telemetry.otlp.enabled: the OpenTelemetry SDK is not installed ({exc}); "
            "install the extra: pip install 'ttft-router[otel]'"
        ) from None
    return OtlpExport(config.telemetry.otlp, replica)


def build_store(config: Config, replica: str) -> Store:
    if isinstance(config.store, RedisStoreConfig):
        from proxy.learning.store.redis_store import RedisStore

        return RedisStore(config.store, replica)
    return MemoryStore(config.store)


def build_upstream(
    name: str, provider: OpenAIProvider | LiteLLMProvider, session: aiohttp.ClientSession
) -> Upstream:
    if isinstance(provider, LiteLLMProvider):
        return LiteLLMUpstream(name, provider)
    return OpenAICompatUpstream(name, provider, session)


def app_from_path(config_path: str) -> FastAPI:
    """uvicorn factory for `serve --workers N` (bound to the config path by the CLI)."""
    from proxy.server import Listener
    from proxy.settings.config import load_config

    config = load_config(config_path)
    redact_logs(config)
    app = create_app(config)
    tune_gc_for_serving()
    return Listener(app)  # type: ignore[return-value]


# Allocations a gen-0 collection waits for (CPython's default: 700).
GC_GEN0_THRESHOLD = 10_000


def tune_gc_for_serving() -> None:
    """Once per server process, when the app is built and before it serves.

    gc.freeze() moves the ~72k objects of imports and startup out of the collector's sight,
    so that a full collection, when one comes, walks only what serving keeps (windows,
    decision log) instead of pausing every stream in flight for ~34 ms to walk them all
    (gc.collect() after create_app: 34 ms; frozen, under 0.1 ms). A gen-0 threshold of
    10,000: in-process, 10k short streamed requests at 32 streams spent 14 us each in
    collections at CPython's 700, 0.8 us at 10,000, with pauses under ~4 ms either way
    (docs/performance.md).
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
