"""``python -m proxy.simulator``: prints every provider, serves, stops on SIGINT."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
MISSION = ROOT / "proxy" / "scenarios" / "mission.yaml"


async def test_cli_serves_the_mission_market_until_sigint() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.simulator",
        str(MISSION),
        "--time-scale",
        "0.01",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            lines = [(await process.stdout.readline()).decode() for _ in range(4)]
        urls = dict(
            re.findall(r"^(provider-[abc]): base_url=(\S+) api_key=sim-key-", "".join(lines), re.M)
        )
        assert set(urls) == {"provider-a", "provider-b", "provider-c"}
        assert "time_scale=0.01" in lines[3]
        headers = {"Authorization": "Bearer sim-key-b"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(urls["provider-b"] + "/models", headers=headers) as response,
        ):
            models = [m["id"] for m in (await response.json())["data"]]
        assert "accounts/b/models/deepseek-v4-pro" in models
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_reports_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.simulator",
        str(bad),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(15):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert f"{bad}: invalid scenario: providers:" in stderr.decode()
