"""Client and admin keys: held as SHA-256 digests, checked in constant time over every key.

A configured key is either the key itself or ``sha256:<64 hex digits>`` (its digest, so the
config need not hold the key). A check hashes the presented token once and compares it with
every configured digest by ``hmac.compare_digest``, without stopping at a match, so neither
which key matched nor how much of it did shows in the time an answer takes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fastapi import Request

from proxy.core.errors import AuthenticationFailed
from proxy.settings.auth import key_digest

_ABSENT = bytes(32)  # compared when no key is configured, so the loop always runs once


class KeySet:
    """The digests of one set of configured keys (client or admin)."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(key_digest(key) for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def digests(self) -> tuple[bytes, ...]:
        """The keys' SHA-256 digests (the dashboard signs its session cookies with them)."""
        return self._digests

    def matches(self, token: str) -> bool:
        if not token:
            return False  # whatever is configured: config.key_problem refuses empty keys
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = False
        for digest in self._digests or (_ABSENT,):
            found |= hmac.compare_digest(digest, presented)
        return found and bool(self._digests)


def bearer_token(request: Request) -> str | None:
    """The key a client sent: ``Authorization: Bearer <key>``, else an ``api-key`` header;
    None when neither holds anything but white space (an empty key is never a key)."""
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return (request.headers.get("api-key") or "").strip() or None


def require_key(keys: KeySet, request: Request, what: str) -> None:
    """Raise AuthenticationFailed unless the request carries one of `keys`; `what` names them."""
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed(f"missing {what}: send 'Authorization: Bearer <key>'")
    if not keys.matches(token):
        raise AuthenticationFailed(f"invalid {what}")
