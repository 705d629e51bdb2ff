"""A bench run killed midway (SIGKILL) and run again ends with exactly what was asked."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from proxy.simulator import Market
from tests.helpers import wait_until
from tests.method.conftest import write_config

REQUESTS, WARMUP, PAIRS = 20, 2, 6


def bench_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "proxy.cli", "bench", "--config", str(config),
            "--requests", str(REQUESTS), "--warmup", str(WARMUP), "--spacing", "0.05",
            "--max-tokens", "4", "--no-plots", "--out", str(out)]  # fmt: skip


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_killed_run_resumes_without_losing_or_repeating_a_sample(
    mission_market: Market, tmp_path: Path
) -> None:
    config, out = write_config(tmp_path, mission_market), tmp_path / "out"
    samples = out / "samples.jsonl"
    first = await asyncio.create_subprocess_exec(
        *bench_command(config, out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_until(lambda: len(lines_of(samples)) > 40 or first.returncode is not None,
                         timeout=30, interval=0.01)  # fmt: skip
    finally:
        if first.returncode is None:
            first.kill()
        await first.wait()
    kept = len(lines_of(samples)) - 1
    assert first.returncode == -9, "the first run must have been killed, not have finished"
    assert 40 <= kept < PAIRS * (REQUESTS + WARMUP)
    assert not (out / "report.json").exists()

    second = await asyncio.create_subprocess_exec(
        *bench_command(config, out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(second.communicate(), timeout=60)
    assert second.returncode == 0, stderr.decode()
    assert f"{kept} requests already in" in stderr.decode()

    records = [json.loads(line) for line in lines_of(samples)[1:]]
    assert len(records) == PAIRS * (REQUESTS + WARMUP)
    keys = Counter((r["model"], r["provider"], r["phase"], r["index"]) for r in records)
    assert max(keys.values()) == 1, "a sample was written twice"
    for phase, count in (("warmup", WARMUP), ("counted", REQUESTS)):
        per_pair = Counter((r["model"], r["provider"]) for r in records if r["phase"] == phase)
        assert sorted(per_pair.values()) == [count] * PAIRS
    report = json.loads((out / "report.json").read_text())
    assert [row["requests"] for row in report["rows"]] == [REQUESTS] * PAIRS
    assert [row["n"] for row in report["rows"]] == [REQUESTS] * PAIRS
