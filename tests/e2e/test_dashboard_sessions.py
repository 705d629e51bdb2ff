"""Dashboard sessions on a real server (issue 24, item 5): a random secret shared through the
store, revocation on logout for every replica, Origin and CSRF checks on cookie POSTs, the
`__Host-` Secure cookie when TLS ends in front, a login rate limit, and a malformed cookie
that is a 401, never a 500. The browser's side: tests/e2e/test_dashboard_browser.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from proxy.api import session
from proxy.settings.config import Config
from proxy.simulator import Market
from tests.e2e.conftest import ADMIN_KEY, Proxy, config_for, running_proxy, scenario
from tests.e2e.test_connections import FAST
from tests.redis_server import RedisServer, needs_redis_server


@contextlib.asynccontextmanager
async def proxy(**overrides: Any) -> AsyncIterator[Proxy]:
    async with Market(scenario({"p": {"m-p": FAST}})) as market:
        config: Config = config_for(market, {"m": {"p": "m-p"}}, **overrides)
        async with running_proxy(config) as running:
            yield running


async def logged_in(web: httpx.AsyncClient) -> str:
    """Sign in; returns the session's CSRF token (from the dashboard page)."""
    ok = await web.post("/dashboard/login", data={"key": ADMIN_KEY})
    assert ok.status_code == 303, ok.text
    page = await web.get("/dashboard")
    assert page.status_code == 200
    return page.text.split('name="csrf-token" content="')[1].split('"')[0]


async def test_a_cookie_post_needs_this_origin_and_the_csrf_token() -> None:
    async with proxy() as running, httpx.AsyncClient(base_url=running.url) as web:
        csrf = await logged_in(web)
        host = running.url.removeprefix("http://")
        evil = {"origin": "http://127.0.0.1:1", "sec-fetch-site": "same-site"}
        reload = "/admin/policy/reload"
        refused = await web.post(reload, headers={**evil, session.CSRF_HEADER: csrf})
        assert refused.status_code == 403 and "cross-origin" in refused.json()["error"]["message"]
        same = {"origin": running.url, "sec-fetch-site": "same-origin", "host": host}
        no_token = await web.post(reload, headers=same)
        assert no_token.status_code == 403 and "CSRF" in no_token.json()["error"]["message"]
        wrong = await web.post(reload, headers={**same, session.CSRF_HEADER: "x"})
        assert wrong.status_code == 403
        ok = await web.post(reload, headers={**same, session.CSRF_HEADER: csrf})
        assert ok.status_code == 200, ok.text
        # the admin key itself is no ambient credential: no token needed
        keyed = await web.post(reload, headers={"Authorization": f"Bearer {ADMIN_KEY}", **evil})
        assert keyed.status_code == 200
        assert (await web.post("/dashboard/login", data={"key": ADMIN_KEY},
                               headers=evil)).status_code == 403  # fmt: skip


async def test_logout_revokes_the_session_on_the_server() -> None:
    async with proxy() as running, httpx.AsyncClient(base_url=running.url) as web:
        csrf = await logged_in(web)
        stolen = web.cookies[session.COOKIE]
        assert (await web.post("/dashboard/logout")).status_code == 403  # no token: refused
        assert (await web.get("/admin/status")).status_code == 200
        out = await web.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303
        async with httpx.AsyncClient(base_url=running.url,
                                     cookies={session.COOKIE: stolen}) as replay:  # fmt: skip
            assert (await replay.get("/admin/status")).status_code == 401
            assert (await replay.get("/dashboard")).status_code == 401  # "sign in again"


async def test_a_malformed_cookie_is_a_401_never_a_500() -> None:
    async with proxy() as running:
        for value in (
            "99999999999.ä",
            "12345.ä",
            "v1.ä.1.x",
            "v1." + "9" * 40 + ".x.y",
            "",
            "....",
            "v1.a.1.b",
        ):
            headers = {"cookie": f"{session.COOKIE}={value}".encode()}  # raw UTF-8 bytes
            async with httpx.AsyncClient(base_url=running.url, headers=headers) as web:
                page = await web.get("/dashboard")
                assert page.status_code in (200, 401), (value, page.status_code)
                assert (await web.get("/admin/status")).status_code == 401


async def test_logins_are_rate_limited() -> None:
    async with proxy() as running, httpx.AsyncClient(base_url=running.url) as web:
        codes = [(await web.post("/dashboard/login", data={"key": f"wrong-{i}"})).status_code
                 for i in range(6)]  # fmt: skip
        assert codes == [401] * 5 + [429]
        limited = await web.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


async def test_tls_in_front_gets_a_host_prefixed_secure_cookie() -> None:
    async with (
        proxy(auth={"api_keys": ["client-key-0123456789abcdef"], "admin_keys": [ADMIN_KEY],
                    "session_cookie_secure": "always", "session_lifetime_s": 600}) as running,
        httpx.AsyncClient(base_url=running.url) as web,
    ):  # fmt: skip
        ok = await web.post("/dashboard/login", data={"key": ADMIN_KEY})
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{session.SECURE_COOKIE}=") and "Secure" in cookie
        assert "Path=/" in cookie and "Domain" not in cookie and "Max-Age=600" in cookie


@needs_redis_server
async def test_replicas_share_the_secret_and_the_revocations(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    store = {"kind": "redis", "url": redis.url, "prefix": "sessions"}
    try:
        async with (
            proxy(store=store) as one,
            proxy(store=store) as two,
            httpx.AsyncClient(base_url=one.url) as web,
        ):
            csrf = await logged_in(web)
            cookie = {session.COOKIE: web.cookies[session.COOKIE]}
            async with httpx.AsyncClient(base_url=two.url, cookies=cookie) as other:
                assert (await other.get("/admin/status")).status_code == 200
                assert (await web.post("/dashboard/logout", data={"csrf": csrf})).status_code == 303
                assert (await other.get("/admin/status")).status_code == 401
    finally:
        redis.kill()
