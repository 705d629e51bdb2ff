"""benchmarks/routing_quality.py must keep running: one scenario, one seed, a few requests.

Not a measure of routing (40 requests are warm-up): the figures it checks are the ones that
cannot depend on luck, so the script cannot rot unseen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 40


def test_routing_quality_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "routing_quality.py"), "--scenarios",
         "lockin", "--quick", "--requests", str(REQUESTS), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=90, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = orjson.loads((tmp_path / "routing_quality.json").read_bytes())
    markdown = (tmp_path / "routing_quality.md").read_text()
    assert "## Targets (issue 11)" in markdown and "| lockin |" in markdown
    (seed,) = report["scenarios"]["lockin"]["seeds"]
    for model in ("deepseek-v4-pro", "kimi-k2.6"):
        result = seed["models"][model]
        strategies = result["strategies"]
        assert {"fixed:provider-a", "fixed:provider-b", "fixed:provider-c", "round-robin",
                "ttft-router"} <= set(strategies)  # fmt: skip
        for name, row in strategies.items():
            assert row["n"] == REQUESTS, name
            assert row["errors"] == 0, (name, seed["error_examples"])
            assert abs(sum(row["share"].values()) - 1.0) < 1e-9, name
            assert row["upstream_per_request"] >= 1.0, name
            assert row["median"] <= row["p95"] <= row["p99"], name
        for provider in ("a", "b", "c"):
            fixed = strategies[f"fixed:provider-{provider}"]
            assert fixed["share"][f"provider-{provider}"] == 1.0
            assert fixed["upstream_per_request"] == 1.0  # no probe, no failover
        rr = strategies["round-robin"]["share"]
        assert max(rr.values()) - min(rr.values()) <= 1 / REQUESTS + 1e-9
        assert result["oracle"] in ("provider-a", "provider-b", "provider-c")
        assert set(result["ratio_p95"]) >= {"ttft-router", "round-robin"}
    # The bait of the scenario: each model's worst provider is fast for its first 30 requests;
    # with 40 requests each, the honeymoon phase is over on the fixed run's pairs at the end.
    phases = seed["phases_at_end"]["fixed"]
    assert phases["deepseek-v4-pro"]["provider-c"] is None
    assert phases["kimi-k2.6"]["provider-a"] is None
