"""Request ids, /metrics (decision counters, TTFT histogram), /admin/report, /admin/samples,
and the dashboard's login: against real servers, through the openai SDK and httpx."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.api import session
from proxy.simulator import Market
from proxy.telemetry.logs import JsonFormatter
from tests.e2e.conftest import (
    ADMIN_KEY,
    CLIENT_KEY,
    config_for,
    policy_file,
    running_proxy,
    scenario,
)
from tests.helpers import wait_until

FAST: dict[str, Any] = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}
HI = [{"role": "user", "content": "hi"}]
POLICY = "defaults: {min_samples: 3, exploration_share: 0.0}\n"


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus text exposition."""
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def test_metrics_parse_and_count_every_request_and_decision(tmp_path: Path) -> None:
    market = Market(scenario({"p": {"m-p": FAST}, "q": {"m-q": FAST}}))
    async with market:
        config = config_for(
            market, {"m": {"p": "m-p", "q": "m-q"}}, policy_file=policy_file(tmp_path, POLICY)
        )
        async with running_proxy(config) as proxy, proxy.admin() as admin:
            client = proxy.client()
            sent = 12
            for i in range(sent):
                await client.chat.completions.create(model="m", messages=HI, stream=i % 2 == 0)
            await wait_until(lambda: len(proxy.services.buffer._decisions) == 0, timeout=5)
            text = (await admin.get("/metrics")).text
            counts = metric_samples(text, "ttft_router_ttft_seconds_count")
            assert sum(v for _, v in counts) == sent
            assert {labels["provider"] for labels, _ in counts} <= {"p", "q"}
            buckets = metric_samples(text, "ttft_router_ttft_seconds_bucket")
            inf = sum(v for labels, v in buckets if labels["le"] == "+Inf")
            assert inf == sent
            decisions = metric_samples(text, "ttft_router_decisions_total")
            assert sum(v for _, v in decisions) == sent
            kinds = {labels["verdict"] for labels, _ in decisions}
            assert kinds <= {"best", "holding", "measuring"} and "measuring" in kinds
            # min_samples 3 on each of two pairs: after 6 measured requests every one is "best"
            # or "holding", by the provider that served it
            assert kinds & {"best", "holding"}
            rows = (await admin.get("/admin/decisions", params={"limit": sent})).json()
            by_kind: dict[tuple[str, str], int] = {}
            for d in rows["decisions"]:
                key = (d["winner"], d["verdict"])
                by_kind[key] = by_kind.get(key, 0) + 1
            assert by_kind == {
                (labels["provider"], labels["verdict"]): int(v) for labels, v in decisions
            }


async def test_failed_request_shares_one_request_id(tmp_path: Path) -> None:
    """Error body, response header, decision and every log line of the request."""
    market = Market(
        scenario(
            {
                "bad": {"m-bad": FAST | {"error_500_rate": 1.0}},
                "worse": {"m-w": FAST | {"error_500_rate": 1.0}},
            }
        )
    )
    handler = logging.StreamHandler(stream := io.StringIO())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        async with market:
            config = config_for(
                market,
                {"m": {"bad": "m-bad", "worse": "m-w"}},
                policy_file=policy_file(tmp_path, POLICY),
            )
            async with running_proxy(config) as proxy, proxy.admin() as admin:
                client = proxy.client(default_headers={"x-request-id": "client-req.42"})
                with pytest.raises(openai.APIStatusError) as raised:
                    await client.chat.completions.create(model="m", messages=HI, stream=True)
                error = raised.value
                assert error.status_code == 502
                assert error.response.headers["x-request-id"] == "client-req.42"
                assert isinstance(error.body, dict) and error.body["request_id"] == "client-req.42"

                async def logged() -> dict[str, Any] | None:
                    rows = (await admin.get("/admin/decisions")).json()["decisions"]
                    return rows[0] if rows else None

                decision = await wait_until(logged, timeout=5)
                assert decision["request_id"] == "client-req.42"
                assert decision["verdict"] == "failover" and decision["winner"] is None
                assert [a["outcome"] for a in decision["attempts"]] == ["http_5xx", "http_5xx"]

                # an unsafe id (space, too long) is replaced by one of the proxy's own
                for unsafe in ("has space", "x" * 129, "semi;colon"):
                    plain = httpx.AsyncClient(base_url=proxy.url)
                    async with plain:
                        r = await plain.post(
                            "/v1/chat/completions",
                            json={"model": "m", "messages": HI},
                            headers={
                                "Authorization": f"Bearer {CLIENT_KEY}",
                                "x-request-id": unsafe,
                            },
                        )
                    made = r.headers["x-request-id"]
                    assert made != unsafe and len(made) == 24
                    assert r.json()["error"]["request_id"] == made
                # every response carries one, admin and health too
                assert (await admin.get("/healthz")).headers["x-request-id"]
                ours = await admin.get("/admin/status", headers={"x-request-id": "op-1"})
                assert ours.headers["x-request-id"] == "op-1"
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    ours_lines = [line for line in lines if line.get("request_id") == "client-req.42"]
    # two failed attempts and the final 502, each a line carrying the client's id
    assert sum("attempt failed" in line["msg"] for line in ours_lines) == 2
    assert any("502" in line["msg"] for line in ours_lines)
    # and no line about this request without it
    assert not [
        line for line in lines if "attempt failed" in line["msg"] and line.get("request_id") is None
    ]


async def test_report_figures_equal_scores(tmp_path: Path) -> None:
    slow = {"warm_ttft": {"median_s": 0.02, "sigma": 0.3}, "tokens_per_s": 2000}
    market = Market(scenario({"p": {"m-p": FAST}, "q": {"m-q": slow}}))
    async with market:
        config = config_for(
            market,
            {"m": {"p": "m-p", "q": "m-q"}, "n": {"p": "m-p"}},
            policy_file=policy_file(tmp_path, POLICY),
        )
        async with running_proxy(config) as proxy, proxy.admin() as admin:
            client = proxy.client()
            for _ in range(10):
                await client.chat.completions.create(model="m", messages=HI, stream=True)
            await wait_until(
                lambda: sum(s.n for s in proxy.services.scoreboard.snapshot.values()) == 10,
                timeout=5,
            )
            scores = (await admin.get("/admin/scores", params={"model": "m"})).json()["pairs"]
            report = (await admin.get("/admin/report", params={"model": "m"})).json()
            assert report["replica"] == proxy.services.replica
            rows = {r["provider"]: r for r in report["rows"]}
            assert set(rows) == {"p", "q"}
            fields = {
                "n": "n",
                "median_s": "median_s",
                "p95_s": "p95_s",
                "p99_s": "p99_s",
                "std_s": "std_s",
                "mean_s": "mean_s",
                "cv": "cv",
                "error_rate": "error_rate",
                "std_over_median": "std_over_median",
                "p95_over_p50": "tail_ratio",
            }
            for pair in scores:
                row = rows[pair["provider"]]
                for ours, theirs in fields.items():
                    assert row[ours] == pair[theirs], (pair["provider"], ours)
                assert row["requests"] == pair["n_attempts"]
                assert row["cold_start_like"] == round((pair["cold_share"] or 0) * pair["n"])
                proven = pair["is_proven"]
                assert row["verdict"] == (pair["band"] if proven else "unproven")
            assert sum(r["is_best"] for r in report["rows"]) <= 1

            markdown = await admin.get("/admin/report", params={"model": "m", "format": "markdown"})
            assert markdown.headers["content-type"].startswith("text/markdown")
            assert "| model | provider | n |" in markdown.text and "| m | p |" in markdown.text
            table = await admin.get("/admin/report", params={"format": "csv"})
            parsed = list(csv.DictReader(io.StringIO(table.text)))
            assert {(r["model"], r["provider"]) for r in parsed} == {
                ("m", "p"),
                ("m", "q"),
                ("n", "p"),
            }
            by_pair = {(r["model"], r["provider"]): r for r in parsed}
            assert int(by_pair["m", "p"]["n"]) == rows["p"]["n"]
            bad = await admin.get("/admin/report", params={"format": "xml"})
            assert bad.status_code == 400 and bad.json()["error"]["param"]
            missing = await admin.get("/admin/report", params={"model": "zz"})
            assert missing.status_code == 404

            samples = (await admin.get("/admin/samples", params={"model": "m"})).json()
            counts = {p["provider"]: len(p["samples"]) for p in samples["pairs"]}
            assert counts == {s["provider"]: s["n_attempts"] for s in scores}
            assert all(p["cold_threshold_s"] for p in samples["pairs"] if p["samples"])
            wrong = await admin.get("/admin/samples", params={"model": "m", "provider": "zz"})
            assert wrong.status_code == 400


async def test_dashboard_login_sets_a_strict_http_only_cookie() -> None:
    market = Market(scenario({"p": {"m-p": FAST}}))
    async with market:
        config = config_for(market, {"m": {"p": "m-p"}})
        async with running_proxy(config) as proxy, httpx.AsyncClient(base_url=proxy.url) as web:
            page = await web.get("/dashboard")
            assert page.status_code == 200 and 'name="key"' in page.text  # the login form
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert (await web.get("/admin/scores")).status_code == 401
            wrong = await web.post("/dashboard/login", data={"key": "nope"})
            assert wrong.status_code == 401 and "not an admin key" in wrong.text
            assert session.COOKIE not in wrong.cookies
            ok = await web.post("/dashboard/login", data={"key": ADMIN_KEY})
            assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
            cookie = ok.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
            assert ADMIN_KEY not in cookie and ADMIN_KEY not in ok.headers["location"]
            assert (await web.get("/admin/scores")).status_code == 200  # the cookie admits
            dash = await web.get("/dashboard")
            assert 'src="/dashboard/static/dashboard.js"' in dash.text
            for name in ("dashboard.js", "uPlot.iife.min.js", "uPlot.min.css", "dashboard.css"):
                static = await web.get(f"/dashboard/static/{name}")
                assert static.status_code == 200 and static.content
            assert (await web.get("/dashboard/static/../config.py")).status_code == 404
            assert (await web.get("/dashboard/static/NOTICE")).status_code == 404
            assert (await web.get("/dashboard/features")).json() == {"routes": ["/admin/prober"]}
            # a client key is not an admin key; a forged or expired cookie admits nothing
            client_login = await web.post("/dashboard/login", data={"key": CLIENT_KEY})
            assert client_login.status_code == 401
            cookie_value = web.cookies[session.COOKIE]
            _, sid, expiry, _ = cookie_value.split(".")
            digest = hashlib.sha256(ADMIN_KEY.encode()).digest()  # what sha256: publishes
            forged = httpx.AsyncClient(
                base_url=proxy.url,
                cookies={
                    session.COOKIE: f"v1.{sid}.{expiry}.{session._sign(digest, sid, int(expiry))}"
                },
            )
            expired = httpx.AsyncClient(base_url=proxy.url, cookies={
                session.COOKIE: await proxy.services.sessions.create(now=0)})  # fmt: skip
            async with forged, expired:
                assert (await forged.get("/admin/scores")).status_code == 401
                assert (await expired.get("/admin/scores")).status_code == 401
            csrf = dash.text.split('name="csrf-token" content="')[1].split('"')[0]
            out = await web.post("/dashboard/logout", data={"csrf": csrf})
            assert out.status_code == 303
            web.cookies.clear()
            assert (await web.get("/admin/scores")).status_code == 401
            assert (await web.get("/admin", follow_redirects=False)).status_code == 307


async def test_dashboard_disabled_without_admin_keys() -> None:
    market = Market(scenario({"p": {"m-p": FAST}}))
    async with market:
        config = config_for(
            market, {"m": {"p": "m-p"}}, auth={"api_keys": [CLIENT_KEY], "admin_keys": []}
        )
        async with running_proxy(config) as proxy, httpx.AsyncClient(base_url=proxy.url) as web:
            page = await web.get("/dashboard")
            assert page.status_code == 403 and "disabled" in page.text
            assert (await web.post("/dashboard/login", data={"key": ""})).status_code == 403


async def test_otlp_enabled_without_the_extra_says_how_to_install() -> None:
    # The SDK is not in the lock, so this is the case CI has: the message says what to do.
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        pytest.skip("the otel extra is installed here; tests/unit/test_otel.py covers export")
    from proxy.app import build_otlp_export
    from proxy.core.errors import ConfigError

    market = Market(scenario({"p": {"m-p": FAST}}))
    async with market:
        config = config_for(market, {"m": {"p": "m-p"}}, telemetry={"otlp": {"enabled": True}})
        with pytest.raises(ConfigError, match=r"ttft-router\[otel\]"):
            build_otlp_export(config, "r1")
