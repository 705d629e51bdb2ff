"""`ttft-router bench` end to end against MISSION.md's simulated market (delays x0.05)."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.cli import build_parser, main
from proxy.method.cli import bench_async
from proxy.simulator import Market
from tests.method.conftest import is_png, write_config

REQUESTS, WARMUP = 40, 2


async def test_bench_ranks_the_mission_market_like_the_published_table(
    mission_market: Market, tmp_path: Path
) -> None:
    config = write_config(tmp_path, mission_market)
    out = tmp_path / "out"
    args = build_parser().parse_args(
        ["bench", "--config", str(config), "--requests", str(REQUESTS), "--warmup",
         str(WARMUP), "--spacing", "0", "--out", str(out)]
    )  # fmt: skip

    assert await bench_async(args) == 0

    report = json.loads((out / "report.json").read_text())
    rows = {(r["model"], r["provider"]): r for r in report["rows"]}
    assert report["best"] == {"deepseek-v4-pro": "provider-a", "kimi-k2.6": "provider-b"}
    assert {key: r["n"] for key, r in rows.items()} == dict.fromkeys(rows, REQUESTS)
    assert all(r["errors"] == 0 for r in rows.values())
    assert rows["deepseek-v4-pro", "provider-a"]["verdict"] == "tight"
    assert rows["deepseek-v4-pro", "provider-b"]["verdict"] == "cold-start-prone"
    assert rows["deepseek-v4-pro", "provider-c"]["verdict"] == "cold-start-prone"
    assert rows["kimi-k2.6", "provider-a"]["verdict"] == "cold-start-prone"
    # Cold starts are ~13-16x the warm median: counted as such, and they make the p95.
    assert rows["deepseek-v4-pro", "provider-a"]["cold_start_like"] == 0
    assert rows["deepseek-v4-pro", "provider-b"]["cold_start_like"] >= 2
    assert rows["deepseek-v4-pro", "provider-b"]["p95_over_p50"] > 4

    # Every request is in the samples file: warm-ups marked, counted ones per pair.
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 6 * (REQUESTS + WARMUP)
    assert sum(json.loads(line)["phase"] == "warmup" for line in lines[1:]) == 6 * WARMUP
    assert {json.loads(line)["source"] for line in lines[1:]} == {"bench"}

    # The report in markdown and CSV, and two pictures per model beside it.
    markdown = (out / "report.md").read_text()
    assert "| deepseek-v4-pro | provider-a | 40 | 0 |" in markdown
    assert "std/mean" in markdown
    assert len((out / "report.csv").read_text().splitlines()) == 7
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == [
        "deepseek-v4-pro-ttft-distribution.png", "deepseek-v4-pro-ttft-over-time.png",
        "kimi-k2.6-ttft-distribution.png", "kimi-k2.6-ttft-over-time.png",
    ]  # fmt: skip
    assert all(is_png(out / name) for name in pictures)

    # `ttft-router report` renders the same table again from the samples file alone.
    again = tmp_path / "again"
    assert main(["report", str(out / "samples.jsonl"), "--out", str(again), "--no-plots"]) == 0
    rerendered = json.loads((again / "report.json").read_text())
    assert rerendered["rows"] == report["rows"]
    assert not list(again.glob("*.png"))


async def test_warmups_come_first_and_duration_spreads_the_rounds(
    mission_market: Market, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = build_parser().parse_args(
        ["bench", "--config", str(write_config(tmp_path, mission_market)),
         "--model", "deepseek-v4-pro", "--provider", "provider-a", "--requests", "6",
         "--warmup", "2", "--concurrency", "2", "--duration", "1.2s", "--spacing", "0",
         "--no-plots", "--out", str(out)]
    )  # fmt: skip

    assert await bench_async(args) == 0

    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()[1:]]
    warmups = [r["timestamp"] for r in records if r["phase"] == "warmup"]
    counted = [r["timestamp"] for r in records if r["phase"] == "counted"]
    assert (len(warmups), len(counted)) == (2, 6)
    assert max(warmups) < min(counted), "counted requests start after the warm-ups"
    # 4 rounds of 2 in flight; the 3 pauses share the 1.2 s (±25% jitter each).
    assert len(set(counted)) == 6 and max(counted) - min(warmups) > 0.6
