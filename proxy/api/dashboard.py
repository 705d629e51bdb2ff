"""The operators' dashboard: /dashboard, its login and its static files (proxy/static).

Served beside the admin API and under its keys: the login form exchanges an admin key for a
session cookie (proxy.api.session), and the page's scripts then read the same /admin JSON
calls an operator would, every two seconds. No build step, no CDN: the page, its script and
the vendored charting library (uPlot, see static/NOTICE) are files inside the package. The
key never appears in a URL: the form posts it in the request body.
"""

from __future__ import annotations

import html
import logging
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from proxy.api import session
from proxy.api.context import authenticate_admin, services
from proxy.core.errors import NotFound

log = logging.getLogger("ttft_router.dashboard")
router = APIRouter()

STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
# Same-origin everything, no inline script: a provider's error text shown on the page can
# never run as code (the script also renders every value as text, never as HTML).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
MAX_LOGIN_BODY = 4096
# Admin routes the page asks for only if this app has them (no 404s in the console).
OPTIONAL_ROUTES = ("/admin/prober",)


def _file(name: str) -> bytes:
    return (resources.files("proxy") / "static" / name).read_bytes()


def _page(name: str, status: int = 200, message: str = "") -> Response:
    body = _file(name).replace(b"{{message}}", html.escape(message).encode())
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)  # fmt: skip


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    svc = services(request)
    if not svc.admin_keys:
        return _page("login.html", 403, "The dashboard is disabled: set auth.admin_keys.")
    if session.from_request(request, svc.admin_keys):
        return _page("dashboard.html")
    return _page("login.html")


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    svc = services(request)
    if not svc.admin_keys:
        return _page("login.html", 403, "The dashboard is disabled: set auth.admin_keys.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return _page("login.html", 413, "The login form was too large.")
    key = (parse_qs(body.decode("utf-8", "replace")).get("key") or [""])[0].strip()
    if not key or not svc.admin_keys.matches(key):
        log.info("dashboard login refused: %s admin key", "invalid" if key else "no")
        return _page("login.html", 401, "That is not an admin key of this proxy.")
    response = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        session.COOKIE, session.make_token(key), max_age=session.LIFETIME_S, path="/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    log.info("dashboard login")
    return response


@router.post("/dashboard/logout")
async def logout() -> Response:
    response = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/dashboard/features")
async def features(request: Request) -> dict[str, list[str]]:
    """Which optional admin routes this app serves (the page skips the others)."""
    authenticate_admin(request)
    paths = {getattr(route, "path", "") for route in request.app.routes}
    return {"routes": [p for p in OPTIONAL_ROUTES if p in paths]}


@router.get("/dashboard/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard file '{name}'")
    headers = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}
    return Response(_file(name), media_type=media_type, headers=headers)


@router.get("/admin")
async def admin_root() -> Response:
    return RedirectResponse("/dashboard", status_code=307)
