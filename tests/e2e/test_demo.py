"""`ttft-router demo` as a user runs it: a subprocess that answers the openai SDK and stops
cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import openai

from tests.helpers import free_port


def test_demo_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "demo", "--port", str(port),
         "--time-scale", "0.05", "--traffic", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo did not start within 30 s"
            time.sleep(0.1)
        key = banner_value(lines, "api key", deadline)
        assert len(key) >= 24 and key != "demo-key"  # a random key, new each run
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        response = client.chat.completions.with_raw_response.create(
            model="kimi-k2.6", messages=[{"role": "user", "content": "Hello"}]
        )
        assert response.headers["x-ttft-router-provider"].startswith("provider-")
        assert response.parse().choices[0].message.content
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        reader.join(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    assert process.returncode == 0, output
    assert f"base_url   http://127.0.0.1:{port}/v1" in output
    assert "/admin/explain" in output
    assert "ttft-router demo stopped." in output


def banner_value(lines: list[str], label: str, deadline: float) -> str:
    """The value printed after `label` in the demo's banner, once it is printed."""
    while time.monotonic() < deadline:
        for line in list(lines):
            if line.strip().startswith(label):
                return line.split()[-1]
        time.sleep(0.05)
    raise AssertionError(f"no '{label}' line in the demo's output: {''.join(lines)}")
