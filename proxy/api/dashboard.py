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

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.routing import NoMatchFound

from proxy.api import session
from proxy.api.auth import bearer_token
from proxy.api.context import authenticate_admin, services
from proxy.core.errors import NotFound, RateLimited

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
OPTIONAL_ROUTES = {"/admin/prober": "prober"}  # path -> the route's name


def _file(name: str) -> bytes:
    return (resources.files("proxy") / "static" / name).read_bytes()


def _page(name: str, status: int = 200, message: str = "", csrf: str = "") -> Response:
    body = _file(name).replace(b"{{message}}", html.escape(message).encode())
    body = body.replace(b"{{csrf}}", html.escape(csrf).encode())
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)  # fmt: skip


DISABLED = "The dashboard is disabled: set auth.admin_keys."


async def cookie_session(request: Request) -> None:
    """Dependency of the admin routes: verify the dashboard's cookie once, here (it may ask
    the store), so that `context.admin` can trust `session.verified`. A request with a key
    is the key's; a cookie-authenticated POST needs this origin and its CSRF token."""
    if bearer_token(request) is not None:
        return
    sessions = services(request).sessions
    found = await sessions.verify(session.cookie_value(request))
    if found is not None and request.method not in session.SAFE_METHODS:
        session.check_post(sessions, found, request, request.headers.get(session.CSRF_HEADER, ""))
    setattr(request.state, session.STATE, found)


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    svc = services(request)
    if not svc.admin_keys:
        return _page("login.html", 403, DISABLED)
    cookie = session.cookie_value(request)
    found = await svc.sessions.verify(cookie)
    if found is not None:
        return _page("dashboard.html", csrf=svc.sessions.csrf_token(found))
    if cookie is None:
        return _page("login.html")
    response = _page("login.html", 401, "Your session has ended: sign in again.")
    _forget(response)
    return response


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    svc = services(request)
    if not svc.admin_keys:
        return _page("login.html", 403, DISABLED)
    if session.cross_origin(request):
        return _page("login.html", 403, "Sign in from this dashboard's own page.")
    address = request.client.host if request.client else "unknown"
    try:
        svc.sessions.check_login_rate(address)
    except RateLimited as exc:
        log.warning("dashboard login refused: too many failures (from %s)", address)
        response = _page("login.html", 429, "Too many failed sign-ins: wait a minute.")
        response.headers.update(exc.headers())
        return response
    form = await _form(request)
    if form is None:
        return _page("login.html", 413, "The login form was too large.")
    key = (form.get("key") or [""])[0].strip()
    if not key or not svc.admin_keys.matches(key):
        svc.sessions.note_login_failure(address)
        log.info("dashboard login refused: %s admin key (from %s)",
                 "invalid" if key else "no", address)  # fmt: skip
        return _page("login.html", 401, "That is not an admin key of this proxy.")
    response = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        svc.sessions.cookie_name(request), await svc.sessions.create(),
        max_age=int(svc.sessions.lifetime_s), path="/", httponly=True, samesite="strict",
        secure=svc.sessions.is_secure(request),
    )  # fmt: skip
    log.info("dashboard login (from %s)", address)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    """Revoke the session (for every replica) and drop the cookie. The form carries the
    session's CSRF token: no other page can sign an operator out."""
    svc = services(request)
    found = await svc.sessions.verify(session.cookie_value(request))
    if found is not None:
        form = await _form(request) or {}
        session.check_post(svc.sessions, found, request, (form.get("csrf") or [""])[0])
        await svc.sessions.revoke(found)
        log.info("dashboard logout: session revoked")
    response = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    _forget(response)
    return response


def _forget(response: Response) -> None:
    for name, secure in ((session.SECURE_COOKIE, True), (session.COOKIE, False)):
        response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)


async def _form(request: Request) -> dict[str, list[str]] | None:
    """The url-encoded form of a POST, None past MAX_LOGIN_BODY bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return None
    return parse_qs(body.decode("utf-8", "replace"))


@router.get("/dashboard/features", dependencies=[Depends(cookie_session)])
async def features(request: Request) -> dict[str, list[str]]:
    """Which optional admin routes this app serves (the page skips the others)."""
    authenticate_admin(request)
    return {"routes": [path for path, name in OPTIONAL_ROUTES.items() if _serves(request, name)]}


def _serves(request: Request, name: str) -> bool:
    """Whether the app has the route called `name` (asked by name: FastAPI keeps included
    routers whole, so `app.routes` does not list their paths)."""
    try:
        request.app.url_path_for(name)
    except NoMatchFound:
        return False
    return True


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
