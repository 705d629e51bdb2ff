from __future__ import annotations

import subprocess
import sys


def test_litellm_is_not_imported_by_the_proxy_or_cli() -> None:
    code = (
        "import sys, proxy.app, proxy.cli, proxy.demo\n"
        "assert 'litellm' not in sys.modules, 'litellm imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_otlp_exporter_is_not_imported_unless_enabled() -> None:
    """The `otel` extra's packages load only when telemetry.otlp.enabled builds an exporter."""
    code = (
        "import sys, proxy.app, proxy.cli, proxy.demo, proxy.telemetry.metrics\n"
        "assert 'proxy.telemetry.otel' not in sys.modules, 'otel imported eagerly'\n"
        "assert 'opentelemetry.sdk' not in sys.modules, 'the OpenTelemetry SDK imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
