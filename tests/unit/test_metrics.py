"""Metrics: the request path's counters on the app's own registry, and the state gauges read
at scrape time (api/health.py's collectors), under their published names."""

from __future__ import annotations

import math
import time

from proxy.api.health import StateCollector
from proxy.core.domain import Outcome, Sample
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.buffer import SampleBuffer
from proxy.learning.store.memory import MemoryStore
from proxy.settings.config import BufferConfig, MemoryStoreConfig
from proxy.settings.policy import PolicyHolder
from proxy.telemetry.metrics import Metrics


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_samples_count_by_outcome_and_only_successes_have_a_ttft() -> None:
    metrics = Metrics()
    metrics.record_sample(Sample("m", "p", Outcome.OK, 0.4, 1.0))
    metrics.record_sample(Sample("m", "p", Outcome.OK, 0.6, 2.0))
    metrics.record_sample(Sample("m", "p", Outcome.HTTP_5XX, None, 3.0))
    assert value(metrics, "ttft_router_attempts_total", model="m", provider="p", outcome="ok") == 2
    assert value(metrics, "ttft_router_attempts_total", model="m", provider="p",
                 outcome=Outcome.HTTP_5XX.value) == 1  # fmt: skip
    assert value(metrics, "ttft_router_ttft_seconds_count", model="m", provider="p") == 2
    assert value(metrics, "ttft_router_ttft_seconds_sum", model="m", provider="p") == 1.0


def test_requests_count_by_status() -> None:
    metrics = Metrics()
    metrics.count_request("m", 200)
    metrics.count_request("m", 200)
    metrics.count_request("m", 499)
    assert value(metrics, "ttft_router_requests_total", model="m", status="200") == 2
    assert value(metrics, "ttft_router_requests_total", model="m", status="499") == 1


async def test_the_state_gauges_are_read_from_scoreboard_buffer_and_store_at_scrape() -> None:
    store = MemoryStore(MemoryStoreConfig())
    buffer = SampleBuffer(BufferConfig(), store)
    board = Scoreboard(store, PolicyHolder([]))
    metrics = Metrics()
    metrics.watch(StateCollector(board, buffer, store))
    assert value(metrics, "ttft_router_store_up") == 1.0
    assert math.isnan(value(metrics, "ttft_router_scoreboard_age_seconds") or 0.0)
    buffer.add_sample(Sample("m", "p", Outcome.OK, 0.3, time.time()))
    assert value(metrics, "ttft_router_buffer_samples") == 1.0
    await buffer.flush()
    await board.refresh()
    assert value(metrics, "ttft_router_buffer_samples") == 0.0
    assert value(metrics, "ttft_router_score", model="m", provider="p", stat="n") == 1.0
    age = value(metrics, "ttft_router_scoreboard_age_seconds")
    assert age is not None and 0 <= age < 60
