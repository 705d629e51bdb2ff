"""The dashboard's sessions: an admin key exchanged for a signed, expiring, revocable cookie.

The cookie holds `v1.<session id>.<expiry>.<HMAC-SHA256(secret, id and expiry)>`, never the
key. The secret is 32 random bytes, made by the first replica that needs it and shared
through the store (`Store.put_once`), so every replica accepts every replica's cookies; it
is nothing a config publishes (a `sha256:` admin key is public by design). A cookie lives at
most `auth.session_lifetime_s` (capped at a day), whatever expiry it claims; logging out
revokes its id in the store, for every replica. A malformed cookie is no session: never an
error.

The cookie is HttpOnly, SameSite=Strict and, over TLS (`auth.session_cookie_secure`),
`Secure` with the `__Host-` name (no subdomain can set or shadow it). SameSite does not
cover other ports of the same host, so every cookie-authenticated POST must also come from
the page's own origin (`Origin`, `Sec-Fetch-Site`) and carry the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from proxy.core.errors import PermissionDenied, RateLimited
from proxy.learning.store.base import Store, StoreUnavailable

log = logging.getLogger("ttft_router.dashboard")

COOKIE = "ttft_router_admin"
SECURE_COOKIE = "__Host-" + COOKIE
CSRF_HEADER = "x-csrf-token"
SECRET_NAME = "dashboard-session-secret"
LOGIN_WINDOW_S = 60.0
LOGIN_FAILURES_PER_ADDRESS = 5  # per LOGIN_WINDOW_S; past it: 429
LOGIN_FAILURES_TOTAL = 30  # from all addresses together, per LOGIN_WINDOW_S
ADDRESSES_KEPT = 10_000
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
STATE = "ttft_router_session"  # request.state attribute: the verified Session, or None


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    expiry: int


class Sessions:
    """Sessions of one app: the shared secret, local revocations, the login rate limit."""

    def __init__(
        self, store: Store, lifetime_s: float, secure: Literal["auto", "always", "never"]
    ) -> None:
        self._store = store
        self.lifetime_s = lifetime_s
        self._secure = secure
        self._secrets: list[bytes] = []  # [0] signs; all verify (a local one while away)
        self._shared = False
        self._revoked: dict[str, float] = {}  # session id -> its expiry (this replica's)
        self._failures: dict[str, deque[float]] = {}
        self._all_failures: deque[float] = deque()
        self._store_down_logged = False

    # -- cookies ------------------------------------------------------------------------

    async def create(self, now: float | None = None) -> str:
        """A new session's cookie value."""
        expiry = int((now if now is not None else time.time()) + self.lifetime_s)
        session_id = secrets.token_urlsafe(18)
        secret = (await self._known_secrets())[0]
        return f"v1.{session_id}.{expiry}.{_sign(secret, session_id, expiry)}"

    async def verify(self, token: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None (malformed, forged, expired, revoked)."""
        session = _parse(token)
        if session is None:
            return None
        now = now if now is not None else time.time()
        if not now < session.expiry <= now + self.lifetime_s + 1:  # a lifetime at most
            return None
        signature = token.rsplit(".", 1)[1].encode() if token else b""
        found = False
        for secret in await self._known_secrets():
            expected = _sign(secret, session.id, session.expiry).encode()
            found |= hmac.compare_digest(signature, expected)
        if not found or await self._is_revoked(session):
            return None
        return session

    async def revoke(self, session: Session, now: float | None = None) -> None:
        """Void the session here at once, and for every replica through the store."""
        now = now if now is not None else time.time()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[session.id] = session.expiry
        try:
            await self._store.put_once(f"revoked:{session.id}", b"1", session.expiry - now + 1)
        except StoreUnavailable as exc:
            log.warning("dashboard logout: the store is unreachable, the session is revoked "
                        "on this replica only until it expires: %s", exc)  # fmt: skip

    def csrf_token(self, session: Session) -> str:
        """The token every cookie-authenticated POST of this session must carry."""
        secret = self._secrets[0] if self._secrets else b""
        return _sign(secret, "csrf:" + session.id, session.expiry)

    def cookie_name(self, request: Request) -> str:
        return SECURE_COOKIE if self.is_secure(request) else COOKIE

    def is_secure(self, request: Request) -> bool:
        if self._secure == "auto":
            return request.url.scheme == "https"
        return self._secure == "always"

    # -- the login rate limit ---------------------------------------------------------------

    def check_login_rate(self, address: str, now: float | None = None) -> None:
        """Raise RateLimited when `address`, or everyone together, failed too often lately."""
        now = now if now is not None else time.time()
        for failures, limit in ((self._failures.get(address), LOGIN_FAILURES_PER_ADDRESS),
                                (self._all_failures, LOGIN_FAILURES_TOTAL)):  # fmt: skip
            while failures and failures[0] <= now - LOGIN_WINDOW_S:
                failures.popleft()
            if failures is not None and len(failures) >= limit:
                raise RateLimited(
                    "too many failed dashboard logins; try again later",
                    retry_after_s=failures[0] + LOGIN_WINDOW_S - now,
                )

    def note_login_failure(self, address: str, now: float | None = None) -> None:
        now = now if now is not None else time.time()
        if len(self._failures) >= ADDRESSES_KEPT:
            cutoff = now - LOGIN_WINDOW_S
            self._failures = {a: f for a, f in self._failures.items() if f and f[-1] > cutoff}
        self._failures.setdefault(address, deque(maxlen=LOGIN_FAILURES_PER_ADDRESS)).append(now)
        self._all_failures.append(now)
        while len(self._all_failures) > LOGIN_FAILURES_TOTAL:
            self._all_failures.popleft()

    # -- the shared secret and revocations ------------------------------------------------

    async def _known_secrets(self) -> list[bytes]:
        if self._shared:
            return self._secrets
        try:
            shared = await self._store.put_once(SECRET_NAME, secrets.token_bytes(32), None)
        except StoreUnavailable as exc:
            if not self._secrets:
                log.warning("dashboard sessions: the store is unreachable, signing with a "
                            "secret of this replica's own until it is back: %s", exc)  # fmt: skip
                self._secrets.append(secrets.token_bytes(32))
            return self._secrets
        self._secrets.insert(0, shared)
        self._shared = True
        return self._secrets

    async def _is_revoked(self, session: Session) -> bool:
        if session.id in self._revoked:
            return True
        try:
            revoked = await self._store.get_value(f"revoked:{session.id}") is not None
        except StoreUnavailable as exc:
            if not self._store_down_logged:
                log.warning("dashboard sessions: revocations of other replicas cannot be "
                            "read while the store is unreachable: %s", exc)  # fmt: skip
                self._store_down_logged = True
            return False
        self._store_down_logged = False
        return revoked


def cookie_value(request: Request) -> str | None:
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)


def cross_origin(request: Request) -> bool:
    """A browser says the request came from another origin than this one. `Sec-Fetch-Site`
    when it is sent (pages cannot set it; same-origin, or none for typed and bookmarked
    requests, are this origin), else `Origin` naming this Host (scheme aside: TLS may end
    before the proxy; "null", which the pages' no-referrer policy makes of same-origin form
    posts in browsers without Sec-Fetch-Site, is refused). SameSite=Strict does not cover
    other ports of the same host; this does."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = request.headers.get("host", "")
    return origin == "null" or origin.split("://", 1)[-1].rstrip("/") != host


def check_post(sessions: Sessions, session: Session, request: Request, token: str) -> None:
    """Raise PermissionDenied unless a cookie-authenticated POST comes from the dashboard's
    own origin with the session's CSRF token (`token`: the header's, or the form's)."""
    if cross_origin(request):
        raise PermissionDenied("cross-origin request refused: the dashboard's session cookie "
                               "works only from the dashboard's own pages")  # fmt: skip
    if not hmac.compare_digest(token.encode(), sessions.csrf_token(session).encode()):
        raise PermissionDenied(f"a session's POST needs its CSRF token ({CSRF_HEADER})")


def verified(request: Request) -> Session | None:
    """The session `dashboard.cookie_session` found on this request (None: none, or the
    route does not check cookies)."""
    session: Session | None = getattr(request.state, STATE, None)
    return session


def _parse(token: str | None) -> Session | None:
    if not token or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit() or len(parts[2]) > 12:
        return None
    return Session(parts[1], int(parts[2]))


def _sign(secret: bytes, session_id: str, expiry: int) -> str:
    message = f"ttft-router dashboard session {session_id} until {expiry}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
