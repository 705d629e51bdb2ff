"""Errors and timeouts are counted per pair and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from proxy.cli import build_parser
from proxy.method.cli import bench_async
from proxy.simulator import Market, Scenario
from tests.helpers import free_port

WARM = {"warm_ttft": {"median_s": 0.3, "sigma": 0.1}, "tokens_per_s": 1000}


async def test_failing_pairs_are_counted_and_never_named_best(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "time_scale": 0.05,
            "providers": {
                "good": {"api_key": "k", "models": {"m": WARM}},
                "broken": {"api_key": "k", "models": {"m": {**WARM, "error_500_rate": 1.0}}},
                "hangs": {"api_key": "k", "models": {"m": {**WARM, "hang_rate": 1.0}}},
            },
        }
    )
    async with Market(scenario) as market:
        providers = {
            name: {"kind": "openai", "base_url": market.base_url(name), "api_key": "k"}
            for name in market.providers
        }
        providers["down"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "api_key": "k",
        }
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "auth": {"allow_unauthenticated": True},
            "providers": providers,
            "models": {"m": {"providers": dict.fromkeys(providers, "m")}},
        }))  # fmt: skip
        out = tmp_path / "out"
        args = build_parser().parse_args(
            ["bench", "--config", str(config), "--requests", "5", "--warmup", "1",
             "--spacing", "0", "--timeout", "0.2", "--no-plots", "--out", str(out)]
        )  # fmt: skip
        assert await bench_async(args) == 0

    report = json.loads((out / "report.json").read_text())
    rows = {r["provider"]: r for r in report["rows"]}
    assert report["best"] == {"m": "good"}
    assert {p: (r["requests"], r["errors"]) for p, r in rows.items()} == {
        "good": (5, 0), "broken": (5, 5), "hangs": (5, 5), "down": (5, 5),
    }  # fmt: skip
    # A timeout is a latency observation too (TTFT > 0.2 s), a 500 or a refusal is not.
    assert (rows["hangs"]["n"], rows["hangs"]["timeouts"], rows["broken"]["n"]) == (5, 5, 0)
    assert rows["hangs"]["median_s"] >= 0.2
    outcomes = {
        json.loads(line)["outcome"] for line in (out / "samples.jsonl").read_text().splitlines()[1:]
    }
    assert outcomes == {"ok", "http_5xx", "timeout", "connect_error"}
