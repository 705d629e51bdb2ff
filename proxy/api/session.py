"""The dashboard's login: an admin key exchanged for a signed, expiring session cookie.

The cookie holds `<expiry>.<HMAC-SHA256(admin key, expiry)>`, never the key: any replica with
the same admin keys accepts it, a changed key voids it, and it cannot be turned back into
the key. It is HttpOnly (page scripts cannot read it) and SameSite=Strict (no other site's
page can send it along, so the cookie cannot drive admin calls from elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

from fastapi import Request

COOKIE = "ttft_router_admin"
LIFETIME_S = 12 * 3600


def make_token(key: str, now: float | None = None) -> str:
    expiry = int((now if now is not None else time.time()) + LIFETIME_S)
    return f"{expiry}.{_sign(key, expiry)}"


def is_valid(token: str | None, keys: Iterable[str], now: float | None = None) -> bool:
    if not token or "." not in token:
        return False
    expiry_text, signature = token.split(".", 1)
    if not expiry_text.isdigit() or int(expiry_text) < (now if now is not None else time.time()):
        return False
    expiry = int(expiry_text)
    return any(hmac.compare_digest(signature, _sign(key, expiry)) for key in keys)


def from_request(request: Request, keys: Iterable[str]) -> bool:
    """True when the request carries a valid dashboard session cookie."""
    return is_valid(request.cookies.get(COOKIE), keys)


def _sign(key: str, expiry: int) -> str:
    message = f"ttft-router dashboard session until {expiry}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
