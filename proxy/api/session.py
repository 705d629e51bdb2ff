"""The dashboard's login: an admin key exchanged for a signed, expiring session cookie.

The cookie holds `<expiry>.<HMAC-SHA256(SHA-256 of the admin key, expiry)>`, never the key:
any replica with the same admin keys accepts it, a changed key voids it, and it cannot be
turned back into the key (the proxy holds only keys' digests, proxy.api.auth). It is HttpOnly
(page scripts cannot read it) and SameSite=Strict (no other site's page can send it along,
so the cookie cannot drive admin calls from elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request

from proxy.api.auth import KeySet

COOKIE = "ttft_router_admin"
LIFETIME_S = 12 * 3600


def make_token(key: str, now: float | None = None) -> str:
    """A session for `key` (an admin key the caller has checked)."""
    expiry = int((now if now is not None else time.time()) + LIFETIME_S)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return f"{expiry}.{_sign(digest, expiry)}"


def is_valid(token: str | None, keys: KeySet, now: float | None = None) -> bool:
    if not token or "." not in token:
        return False
    expiry_text, signature = token.split(".", 1)
    if not expiry_text.isdigit() or int(expiry_text) < (now if now is not None else time.time()):
        return False
    expiry = int(expiry_text)
    found = False
    for digest in keys.digests:  # every one, like KeySet.matches: no early exit on a match
        found |= hmac.compare_digest(signature, _sign(digest, expiry))
    return found


def from_request(request: Request, keys: KeySet) -> bool:
    """True when the request carries a valid dashboard session cookie."""
    return is_valid(request.cookies.get(COOKIE), keys)


def _sign(digest: bytes, expiry: int) -> str:
    message = f"ttft-router dashboard session until {expiry}".encode()
    return hmac.new(digest, message, hashlib.sha256).hexdigest()
