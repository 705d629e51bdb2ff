"""OTLP export (the optional `otel` extra): a real proxy pushes to a real OTLP/HTTP receiver.

The extra is not in requirements.lock, so in CI this module is skipped, and says so; with
`pip install 'ttft-router[otel]'` it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk", reason="the optional 'otel' extra is not installed")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from proxy.simulator import Market
from tests.e2e.conftest import config_for, policy_file, running_proxy, scenario
from tests.helpers import bound_socket, wait_until

FAST: dict[str, Any] = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}


async def test_ttft_and_decisions_reach_an_otlp_receiver(tmp_path: Path) -> None:
    received: list[ExportMetricsServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bound_socket()
    await web.SockSite(runner, sock).start()
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/metrics"

    def figures() -> tuple[int, int]:
        """(TTFT histogram count, decisions) of the newest export (cumulative)."""
        ttft = decisions = 0
        for message in received[-1:]:
            for resource in message.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == "gen_ai.client.inference.time_to_first_chunk":
                            assert metric.unit == "s"
                            ttft += sum(p.count for p in metric.histogram.data_points)
                        elif metric.name == "ttft_router.decisions":
                            decisions += int(sum(p.as_int for p in metric.sum.data_points))
        return ttft, decisions

    try:
        async with Market(scenario({"p": {"m-p": FAST}})) as market:
            config = config_for(
                market,
                {"m": {"p": "m-p"}},
                policy_file=policy_file(tmp_path, "defaults: {min_samples: 2}\n"),
                telemetry={"otlp": {"enabled": True, "endpoint": endpoint, "interval_s": 0.2}},
            )
            async with running_proxy(config) as proxy:
                client = proxy.client()
                for _ in range(5):
                    await client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                    )
                await wait_until(lambda: received and figures() == (5, 5), timeout=10)
    finally:
        await runner.cleanup()
        sock.close()
