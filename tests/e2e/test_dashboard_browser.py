"""The dashboard in a real browser: headless Chromium (Debian's `chromium` package) driven by
Playwright's Python package, against the proxy serving MISSION.md's simulated market.

Playwright's own browser download does not work on these machines, so the test launches the
system's binary (`shutil.which("chromium")`). Without it the test skips on a developer's
machine and fails in CI (CI=true), where .ci/run installs it: it never skips silently there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from proxy.api import session
from proxy.app import create_app
from proxy.core.domain import Outcome, Sample, Source
from proxy.demo import MISSION_MODELS, DemoKeys, demo_policies, mission_config
from proxy.settings.auth import ClientSpec
from proxy.simulator import Market, load_scenario
from tests.e2e.conftest import Proxy
from tests.fakes.scripted import serving
from tests.helpers import serve_app, wait_until

TIME_SCALE = 0.02  # cold starts of 10-90 s become 0.2-1.8 s
REQUESTS = 150  # enough for every pair to get samples (unproven pairs are measured first)
MARKER = "browser-check-1"
KEYS = DemoKeys.random()
NAMED_KEY = "browser-app-4e8c2a6f1d9b3e7c5a0d"


def chromium_or_skip() -> str:
    binary = shutil.which("chromium")
    if binary is not None:
        return binary
    why = "Debian's chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: .ci/run installs it; the dashboard's browser test must run in CI")
    pytest.skip(why)


async def send_traffic(proxy: Proxy, count: int, concurrency: int = 8) -> None:
    client = demo_client(proxy)
    models = list(MISSION_MODELS)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            await client.chat.completions.create(
                model=models[i % len(models)],
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                max_tokens=4,
            )

    await asyncio.gather(*(one(i) for i in range(count)))


def demo_client(proxy: Proxy, **kw: Any) -> openai.AsyncOpenAI:
    """A client with the demo config's key (proxy.demo.mission_config), or `api_key`."""
    kw.setdefault("api_key", KEYS.client)
    return openai.AsyncOpenAI(base_url=proxy.url + "/v1", max_retries=0, timeout=30, **kw)


def probe_like_samples(proxy: Proxy) -> None:
    """Samples marked `probe`, into the buffer that carries every sample to the store, so
    that the time chart's probe series has points (this branch has no prober of its own)."""
    now = time.time()
    for model, providers in MISSION_MODELS.items():
        for i, provider in enumerate(providers):
            for k in range(3):
                proxy.services.buffer.add_sample(Sample(
                    model=model, provider=provider, outcome=Outcome.OK,
                    ttft_s=0.01 + 0.004 * (i + k), timestamp=now - 1 + 0.2 * k,
                    source=Source.PROBE,
                ))  # fmt: skip


def sized_samples(proxy: Proxy) -> None:
    """Samples at prompt sizes from 100 to 12,000 tokens (TTFT growing with them), so that the
    chart of TTFT against prompt tokens spreads out (the traffic's prompts are all tiny)."""
    now = time.time()
    for model, providers in MISSION_MODELS.items():
        for i, provider in enumerate(providers):
            for k, tokens in enumerate((100, 1000, 4000, 12_000)):
                proxy.services.buffer.add_sample(Sample(
                    model=model, provider=provider, outcome=Outcome.OK,
                    ttft_s=0.02 + (1 + i) * 2e-6 * tokens, timestamp=now - 1 + 0.1 * k,
                    prompt_tokens=tokens, output_tokens=40, decode_s=0.5,
                ))  # fmt: skip


async def with_prefill(route: Any) -> None:
    """/admin/scores as the browser gets it, each model's first pair given a fitted prefill
    line where the scores carry none yet (the latency model in prompt tokens fills it); any
    other answer passes unchanged."""
    response = await route.fetch()
    if not response.ok:  # a poll caught by the sign-out sees 401: passed on as it came
        await route.fulfill(response=response)
        return
    body = await response.json()
    seen: set[str] = set()
    for pair in body["pairs"]:
        if pair["model"] not in seen and not pair.get("prefill"):
            pair["prefill"] = {"base_s": 0.02, "s_per_token": 2e-6, "identified": True}
        seen.add(pair["model"])
    await route.fulfill(response=response, json=body)


async def test_dashboard_in_chromium(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    from playwright.async_api import ConsoleMessage, async_playwright

    scenario = load_scenario(str(resources.files("proxy") / "scenarios" / "mission.yaml"))
    async with Market(scenario.with_time_scale(TIME_SCALE)) as market:
        config = mission_config(market, 0, KEYS)
        # as behind a TLS-terminating balancer: the __Host- cookie, Secure (Chromium keeps
        # Secure cookies of http://127.0.0.1, a potentially trustworthy origin)
        named = {"browser-app": ClientSpec(key=NAMED_KEY, budget={"usd_per_day": 5.0},
                                           limits={"requests_per_minute": 1000})}  # fmt: skip
        secure = config.auth.model_copy(update={"session_cookie_secure": "always",
                                                "clients": named})  # fmt: skip
        app = create_app(config.model_copy(update={"auth": secure}), demo_policies(TIME_SCALE))
        async with serve_app(app) as url:
            proxy = Proxy(url, app)
            await send_traffic(proxy, REQUESTS)
            probe_like_samples(proxy)
            sized_samples(proxy)
            pairs = [(m, p) for m, providers in MISSION_MODELS.items() for p in providers]
            board = proxy.services.scoreboard
            await wait_until(lambda: all(board.snapshot.get(p) for p in pairs_of(pairs)), 10)

            problems: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                if message.type in ("error", "warning"):
                    problems.append(f"console {message.type}: {message.text} {message.location}")

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium)
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.on("console", on_console)
                    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
                    await page.route("**/admin/scores*", with_prefill)
                    await page.goto(url + "/dashboard")
                    assert await page.title() == "ttft-router: sign in"
                    await page.fill("#key", KEYS.admin)
                    await page.click("#login")
                    await page.wait_for_selector(".uplot canvas", timeout=15_000)
                    assert "key" not in page.url and KEYS.admin not in page.url

                    # every pair: a row in its model's table and two drawn charts
                    for model, provider in pairs:
                        section = page.locator(f"#model-{model.replace('.', '_')}")
                        await section.locator(f"tr[data-pair='{provider}']").wait_for()
                        charts = section.locator(f".pair[data-pair='{provider}'] .uplot canvas")
                        await wait_until(_count_is(charts, 2), timeout=10)
                    # per model: TTFT against prompt tokens, with the fitted line, and the
                    # last 5 min / 30 min / day; throughput percentiles in the scores table
                    for model, providers in MISSION_MODELS.items():
                        first = next(iter(providers))
                        section = page.locator(f"#model-{model.replace('.', '_')}")
                        chart = section.locator(".prompt-chart .uplot")
                        await chart.locator("canvas").wait_for(timeout=10_000)
                        legend = chart.locator(".u-legend")
                        await wait_until(_has_text(legend, f"{first} fit"), timeout=10)
                        figures = section.locator(f".published tr[data-published='{first}']")
                        await figures.wait_for(timeout=10_000)
                        assert "%" in (await figures.text_content() or "")
                        head = await section.locator("table.pairs thead").text_content() or ""
                        assert "tok/s p50" in head and "tok/s p99" in head
                    drawn = await page.evaluate(DRAWN_PIXELS)
                    assert min(drawn) > 100, drawn  # each canvas has painted pixels
                    explain = page.locator(".explain .reason-text").first
                    assert (await explain.text_content() or "").strip()
                    health = await page.locator("#health").text_content() or ""
                    assert "memory: reachable" in health and "prober" in health
                    assert "prober: not available" not in health  # the demo runs its prober
                    # per pair, what the prober plans for it (a standby is kept warm)
                    plans = page.locator("table.pairs td.plan")

                    async def planned() -> bool:
                        return any(t.strip() for t in await plans.all_text_contents())

                    await wait_until(planned, timeout=10)
                    assert "Policy in force" in (await page.locator("#policy").text_content() or "")

                    # a new decision appears without a reload, naming its client
                    await page.evaluate("window.__noReload = true")
                    named = demo_client(proxy, api_key=NAMED_KEY)
                    await named.chat.completions.create(
                        model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
                    )
                    client_row = page.locator("#clients tr[data-client='browser-app']")
                    await wait_until(_text_has(client_row, "1 / 1000"), timeout=10)
                    row_text = await client_row.text_content() or ""
                    assert "/ 5.00" in row_text and "all" in row_text  # budget, models
                    assert "anonymous" in (await page.locator("#clients").text_content() or "")
                    content = await page.content()
                    assert NAMED_KEY not in content and KEYS.client not in content
                    client = demo_client(proxy, default_headers={"x-request-id": MARKER})
                    await client.chat.completions.create(
                        model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
                    )
                    row = page.locator(f"#decisions tr[data-request-id='{MARKER}']")
                    await row.wait_for(timeout=10_000)
                    assert "kimi-k2.6" in (await row.text_content() or "")
                    assert await page.evaluate("window.__noReload === true")

                    await page.wait_for_timeout(300)  # let the last redraw settle
                    shot = tmp_path / "dashboard.png"
                    await page.screenshot(path=str(shot), full_page=True)
                    assert shot.stat().st_size > 20_000

                    seen = len(problems)
                    await check_the_session(page, proxy)
                    # the attack's requests, refused; a poll caught by the sign-out: 401
                    later, problems[seen:] = problems[seen:], []
                    attack = [p for p in later if "/admin/policy/reload" in p]
                    assert attack and all("status of 403" in p for p in attack), later
                    assert all("status of 401" in p for p in later if p not in attack), later
                finally:
                    await browser.close()
            assert problems == [], problems


async def check_the_session(page: Any, proxy: Proxy) -> None:
    """The session cookie as the browser holds it; a page of another port of the same host
    (same site: SameSite=Strict sends the cookie along) cannot make the dashboard's session
    reload the policy; signing out revokes the session on the server."""
    cookies = {c["name"]: c for c in await page.context.cookies()}
    cookie = cookies[session.SECURE_COOKIE]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/" and session.COOKIE not in cookies
    before = proxy.services.policies.last_reload_at

    async def attack(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK.replace("PROXY", proxy.url), content_type="text/html")

    async with serving(attack, "/", method="GET") as evil_url:
        await page.goto(evil_url + "/")
        await page.wait_for_function("document.title === 'sent'", timeout=10_000)
    assert proxy.services.policies.last_reload_at == before  # refused: no reload happened
    await page.goto(proxy.url + "/dashboard")  # still signed in
    await page.click("#logout")
    await page.wait_for_selector("#key", timeout=10_000)  # the login form again
    replay = {session.SECURE_COOKIE: cookie["value"]}
    async with httpx.AsyncClient(base_url=proxy.url, cookies=replay) as stolen:
        assert (await stolen.get("/admin/status")).status_code == 401


# A page of another origin (another port of 127.0.0.1) posting to the dashboard's admin API
# with the browser's cookies: a fetch and a form, as a malicious page would.
ATTACK = """<!doctype html><title>loading</title><link rel="icon" href="data:,">
<form id="f" method="post" action="PROXY/admin/policy/reload" target="sink"></form>
<iframe name="sink"></iframe>
<script>
fetch("PROXY/admin/policy/reload", {method: "POST", credentials: "include", mode: "no-cors"})
  .catch(() => null)
  .then(() => { document.getElementById("f").submit(); })
  .then(() => new Promise((done) => setTimeout(done, 500)))
  .then(() => { document.title = "sent"; });
</script>"""


def pairs_of(pairs: list[tuple[str, str]]) -> list[Any]:
    from proxy.core.domain import Pair

    return [Pair(m, p) for m, p in pairs]


def _has_text(locator: Any, text: str) -> Any:
    async def check() -> bool:
        return text in (await locator.text_content() or "")

    return check


def _count_is(locator: Any, n: int) -> Any:
    async def check() -> bool:
        return bool(await locator.count() == n)

    return check


def _text_has(locator: Any, text: str) -> Any:
    async def check() -> bool:
        return await locator.count() == 1 and text in (await locator.text_content() or "")

    return check


# For each chart canvas, how many pixels are not transparent.
DRAWN_PIXELS = """() => [...document.querySelectorAll('.uplot canvas')].map((c) => {
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
  return painted;
})"""
