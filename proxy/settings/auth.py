"""The `auth` section of config.yaml: client keys (anonymous and named), admin keys, and what
a named client may do (docs/clients.md).

Owns how a configured key is checked and hashed (`key_problem`, `key_digest`), and the shape
of `auth.clients`: per client its key(s), rate limits, budget, models, request controls and
caps. Knows nothing of how limits are counted (proxy.clients) and starts nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator

from proxy.settings.base import Frozen

HASHED_KEY = re.compile(r"sha256:([0-9a-fA-F]{64})")
MIN_KEY_CHARS = 24
# Keys that are instructions, not secrets (copied from an example, never replaced).
_PLACEHOLDER = re.compile(
    r"replaceme|changeme|yourkey|yourapikey|yoursecret|keyhere|secrethere|placeholder|"
    r"insertkey|example|dummy|notasecret|xxxxxx|todo|fixme"
)
# The digests of an empty key and of the placeholders the project ever shipped: a hashed
# key cannot be checked for its length, but it can be checked against these.
_PLACEHOLDER_DIGESTS = frozenset(
    hashlib.sha256(text.encode()).digest()
    for text in ("", "replace-me", "changeme", "change-me", "demo-key", "demo-admin-key")
)
# A client's name is a Redis hash tag, a metrics label and a header value: kept plain.
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ANONYMOUS = "anonymous"  # the client of `auth.api_keys` (and of unauthenticated use)

# The request controls (docs/request-controls.md) a client may be granted.
ClientControl = Literal["order", "only", "ignore", "allow_fallbacks", "sort", "max_price",
                        "affinity", "preferred_max_latency",
                        "preferred_min_throughput"]  # fmt: skip
CLIENT_CONTROLS: tuple[ClientControl, ...] = get_args(ClientControl)


def key_digest(key: str) -> bytes:
    """The SHA-256 digest of a configured key: given as ``sha256:<hex>``, or hashed here."""
    hashed = HASHED_KEY.fullmatch(key)
    if hashed:
        return bytes.fromhex(hashed.group(1))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_problem(key: str) -> str | None:
    """Why `key` must not be a client or admin key, or None. Never quotes the key."""
    if not key.strip():
        return "is empty (an environment variable set to nothing?)"
    if key != key.strip():
        return "starts or ends with white space"
    if key.lower().startswith("sha256:"):
        if not HASHED_KEY.fullmatch(key):
            return "is not a hashed key: 'sha256:' and 64 hex digits"
        if key_digest(key) in _PLACEHOLDER_DIGESTS:
            return "is the digest of an empty or placeholder key"
        return None
    if len(key) < MIN_KEY_CHARS:
        return (f"has {len(key)} characters; a key needs at least {MIN_KEY_CHARS} "
                "(generate one: openssl rand -hex 32)")  # fmt: skip
    if _PLACEHOLDER.search(re.sub(r"[^a-z0-9]", "", key.lower())) or len(set(key)) < 8:
        return "looks like a placeholder, not a random key (generate one: openssl rand -hex 32)"
    return None


def _check_keys(keys: list[SecretStr]) -> list[SecretStr]:
    for index, key in enumerate(keys):
        problem = key_problem(key.get_secret_value())
        if problem is not None:
            raise ValueError(f"the key at index {index} {problem}")
    return keys


def is_loopback(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or the name localhost."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RateLimits(Frozen):
    """Per client, over every replica sharing the store (a sliding minute); null: no limit."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(
        None, ge=1, description="prompt + completion tokens (reported usage; estimated first)"
    )
    concurrent_requests: int | None = Field(None, ge=1, description="requests in flight")


class Budget(Frozen):
    """USD per UTC day and calendar month (UTC), from metering (docs/cost.md); null: none."""

    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)


class ClientRules(Frozen):
    """What a client may do: its limits, budget, models, request controls and caps."""

    limits: RateLimits = RateLimits()
    budget: Budget = Budget()
    models: list[str] | None = Field(None, description="the only models it sees; null: all")
    controls: list[ClientControl] = Field(
        default_factory=list,
        description="request controls granted to this client (beside the policy's "
        "client_controls of each model)",
    )
    max_tokens: int | None = Field(
        None, ge=1, description="max_tokens (max_completion_tokens, max_output_tokens) cap"
    )
    max_n: int | None = Field(None, ge=1, description="n (and best_of) cap")


class ClientSpec(ClientRules):
    """A named client: its key (or several, to rotate them) and its rules."""

    key: SecretStr | None = Field(None, description="the key, or sha256:<hex> of it")
    keys: list[SecretStr] = Field(default_factory=list, description="several keys (rotation)")

    @field_validator("key")
    @classmethod
    def _usable_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            problem = key_problem(key.get_secret_value())
            if problem is not None:
                raise ValueError(f"the key {problem}")
        return key

    @field_validator("keys")
    @classmethod
    def _usable_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        return _check_keys(keys)

    @model_validator(mode="after")
    def _one_way(self) -> ClientSpec:
        if (self.key is None) == (not self.keys):
            raise ValueError("give either key or keys (a list, to rotate keys)")
        return self

    def secrets(self) -> list[str]:
        """Every key of this client as configured (a key or its sha256: digest)."""
        given = [self.key] if self.key is not None else self.keys
        return [k.get_secret_value() for k in given]


class AuthConfig(Frozen):
    """Client and admin keys. Each is the key itself (at least 24 characters, not a
    placeholder) or ``sha256:<64 hex digits>`` (its digest). Required in every config: a
    proxy without keys serves only when `allow_unauthenticated` says so, on loopback."""

    api_keys: list[SecretStr] = Field(
        default_factory=list, description="anonymous client keys (the client 'anonymous')"
    )
    clients: dict[str, ClientSpec] = Field(
        default_factory=dict, description="named clients (docs/clients.md)"
    )
    anonymous: ClientRules = Field(
        ClientRules(), description="the rules of api_keys (and of unauthenticated use)"
    )
    client_header: bool = Field(
        False, description="send x-ttft-router-client (the client's name) on /v1 responses"
    )
    fallback_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="while the store is unreachable each replica enforces this share of "
        "every limit and of the budget left (1/replicas keeps the fleet's total)",
    )
    admin_keys: list[SecretStr] = Field(default_factory=list)
    allow_unauthenticated: bool = Field(
        False, description="serve /v1 without a key (local development only: loopback binds)"
    )
    session_lifetime_s: float = Field(
        8 * 3600.0, gt=0, le=24 * 3600.0, description="a dashboard session lasts this long"
    )
    session_cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto",
        description="the dashboard cookie's Secure flag (and __Host- name): auto: when the "
        "request came over https; always: TLS ends at a load balancer in front",
    )

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _usable_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        return _check_keys(keys)

    @field_validator("clients")
    @classmethod
    def _names(cls, clients: dict[str, ClientSpec]) -> dict[str, ClientSpec]:
        for name in clients:
            if name == ANONYMOUS:
                raise ValueError(f"'{ANONYMOUS}' is the client of auth.api_keys: set its "
                                 "rules in auth.anonymous, or choose another name")  # fmt: skip
            if not CLIENT_NAME.fullmatch(name):
                raise ValueError(f"client name {name!r}: 1 to 64 of A-Z a-z 0-9 _ . -, "
                                 "starting with a letter or digit")  # fmt: skip
        return clients

    @model_validator(mode="after")
    def _some_key(self) -> AuthConfig:
        if not self.api_keys and not self.clients and not self.allow_unauthenticated:
            raise ValueError(
                "auth.api_keys is empty: list at least one client key (auth.api_keys or "
                "auth.clients) or set auth.allow_unauthenticated: true"
            )
        owners: dict[bytes, str] = {}
        for owner, keys in self._client_keys():
            for key in keys:
                digest = key_digest(key)
                if digest in owners and owners[digest] != owner:
                    raise ValueError(f"{owners[digest]} and {owner} share a key: each key "
                                     "belongs to one client")  # fmt: skip
                owners[digest] = owner
        if any(key_digest(k.get_secret_value()) in owners for k in self.admin_keys):
            raise ValueError("auth.admin_keys and auth.api_keys share a key: an admin key "
                             "must not be a client key")  # fmt: skip
        return self

    def _client_keys(self) -> list[tuple[str, list[str]]]:
        named = [(f"auth.clients.{n}", spec.secrets()) for n, spec in self.clients.items()]
        return [("auth.api_keys", [k.get_secret_value() for k in self.api_keys]), *named]

    @property
    def is_open(self) -> bool:
        """/v1 is served without a key."""
        return self.allow_unauthenticated and not self.api_keys and not self.clients


def check_bind(auth: AuthConfig, host: str) -> None:
    """Raise ValueError when /v1 would be served without a key on a non-loopback `host`."""
    if auth.is_open and not is_loopback(host):
        raise ValueError(
            f"auth.allow_unauthenticated: refused on host {host!r}, which is not a loopback "
            "address: anyone who reaches it would spend your providers' keys; list "
            "auth.api_keys, or bind to 127.0.0.1"
        )
