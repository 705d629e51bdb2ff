"""Optional OTLP export (the `otel` extra, `telemetry.otlp.enabled`); imported only when enabled.

Mirrors what the request path counts for Prometheus under OpenTelemetry's GenAI names: every
first token into the histogram `gen_ai.client.inference.time_to_first_chunk` (seconds; the
proxy is the provider's client), every decision into `ttft_router.decisions`. A periodic
reader pushes them to an OTLP/HTTP collector from the SDK's own thread.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from proxy.core.domain import Sample
from proxy.settings.config import OtlpConfig
from proxy.telemetry.metrics import TTFT_BUCKETS

TTFT_NAME = "gen_ai.client.inference.time_to_first_chunk"
DECISIONS_NAME = "ttft_router.decisions"


class OtlpExport:
    """An ExportSink (proxy.telemetry.metrics) over an OpenTelemetry MeterProvider of its own."""

    def __init__(
        self, config: OtlpConfig, replica: str, reader: MetricReader | None = None
    ) -> None:
        """`reader`: where the figures go instead of OTLP/HTTP (tests: an in-memory one)."""
        self.reader = reader or PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=config.endpoint),
            export_interval_millis=config.interval_s * 1000,
        )
        buckets = View(
            instrument_name=TTFT_NAME,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=TTFT_BUCKETS),
        )
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=Resource.create(
                {"service.name": "ttft-router", "service.instance.id": replica}
            ),
            views=[buckets],
        )
        meter = self.provider.get_meter("ttft_router")
        self._ttft = meter.create_histogram(
            TTFT_NAME, unit="s", description="Time to first chunk of successful attempts"
        )
        self._decisions = meter.create_counter(
            DECISIONS_NAME, unit="{decision}", description="Routing decisions by verdict"
        )

    def ttft(self, sample: Sample) -> None:
        assert sample.ttft_s is not None
        self._ttft.record(sample.ttft_s, {
            "gen_ai.request.model": sample.model, "gen_ai.provider.name": sample.provider,
            "ttft_router.source": sample.source.value,
        })  # fmt: skip

    def decision(self, model: str, provider: str, verdict: str) -> None:
        self._decisions.add(1, {"gen_ai.request.model": model, "gen_ai.provider.name": provider,
                                "ttft_router.verdict": verdict})  # fmt: skip

    def shutdown(self) -> None:
        self.provider.shutdown(timeout_millis=5000)
