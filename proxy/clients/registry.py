"""Who a client is: its key's digest -> its `Client` (name, limits, permissions), and the
holder that swaps in a new registry when the config file changes (like policies).

A presented key is hashed once (SHA-256) and its digest looked up in a table of the
configured digests. The lookup's timing can tell an attacker nothing about a configured key:
it depends on the digest of the key they sent, which they cannot steer towards a configured
digest, and on Python's per-process keyed hash of it. So one table serves a thousand keys
at the cost of one; admin keys (a few) keep KeySet's compare-with-every-key (api.auth).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Collection
from dataclasses import dataclass

from proxy.core.errors import ConfigError
from proxy.core.loops import pause
from proxy.learning.store.base import ClientLimits
from proxy.settings.auth import ANONYMOUS, AuthConfig, ClientRules, key_digest
from proxy.settings.config import Config, load_config

log = logging.getLogger("ttft_router.clients")
SLOT_MARGIN_S = 60.0  # a concurrency slot outlives the longest request by this much
RELOAD_CHECK_S = 1.0  # how often the config file's modification time is looked at


@dataclass(frozen=True, slots=True)
class Client:
    """One client as the request path sees it. `limits` is None when it has neither rate
    limits nor a budget (its requests never ask the store first); `models` None: every
    model; `controls`: the request controls granted to it (beside each model's policy)."""

    name: str
    limits: ClientLimits | None
    models: frozenset[str] | None
    controls: frozenset[str]
    max_tokens: int | None
    max_n: int | None
    rules: ClientRules  # as configured (the admin API shows it)

    @property
    def counts_tokens(self) -> bool:
        """It has a tokens-per-minute limit: its answers' usage is asked for and counted."""
        return self.limits is not None and self.limits.tokens is not None

    def sees(self, model: str) -> bool:
        return self.models is None or model in self.models


def client_of(name: str, rules: ClientRules, hold_s: float) -> Client:
    rate, budget = rules.limits, rules.budget
    limited = any(
        v is not None for v in (*rate.model_dump().values(), *budget.model_dump().values())
    )
    limits = ClientLimits(
        requests=rate.requests_per_minute, tokens=rate.tokens_per_minute,
        concurrent=rate.concurrent_requests, usd_per_day=budget.usd_per_day,
        usd_per_month=budget.usd_per_month, hold_s=hold_s,
    )  # fmt: skip
    return Client(
        name=name, limits=limits if limited else None,
        models=frozenset(rules.models) if rules.models is not None else None,
        controls=frozenset(rules.controls), max_tokens=rules.max_tokens, max_n=rules.max_n,
        rules=rules,
    )  # fmt: skip


class Registry:
    """The clients of one reading of `auth`: by key digest, and by name."""

    __slots__ = ("_by_digest", "anonymous", "by_name", "is_open")

    def __init__(self, auth: AuthConfig, hold_s: float) -> None:
        self.anonymous = client_of(ANONYMOUS, auth.anonymous, hold_s)
        self.by_name: dict[str, Client] = {
            name: client_of(name, spec, hold_s) for name, spec in auth.clients.items()
        }
        self._by_digest: dict[bytes, Client] = {
            key_digest(k.get_secret_value()): self.anonymous for k in auth.api_keys
        }
        for name, spec in auth.clients.items():
            for key in spec.secrets():
                self._by_digest[key_digest(key)] = self.by_name[name]
        self.is_open = auth.is_open  # /v1 without a key: every request is anonymous

    def __len__(self) -> int:
        return len(self._by_digest)

    def identify(self, token: str) -> Client | None:
        """The client whose key `token` is; None for no configured key (module docstring)."""
        if not token:
            return None
        return self._by_digest.get(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())

    def clients(self) -> list[Client]:
        """Every named client, then anonymous."""
        return [*self.by_name.values(), self.anonymous]


def slot_hold_s(config: Config) -> float:
    """How long a concurrency slot is held at most: the longest a request can run."""
    longest = max((p.timeouts.total_s for p in config.providers.values()), default=600.0)
    return longest + SLOT_MARGIN_S


class ClientsHolder:
    """The current Registry; `reload()` reads the config file again and swaps in its
    `auth.clients`, `auth.api_keys` and `auth.anonymous`, or keeps the last good ones. Other
    sections of the file need a restart."""

    def __init__(self, config: Config) -> None:
        self.path = config.source
        self.models: Collection[str] = frozenset(config.models)
        self._hold_s = slot_hold_s(config)
        self.current = Registry(config.auth, self._hold_s)
        self.last_error: str | None = None
        self.last_reload_at: float | None = None
        self._mtime = self._read_mtime()

    def _read_mtime(self) -> float:
        if self.path is None:
            return -1.0
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return -1.0

    def reload(self) -> str | None:
        """Returns None on success, else the error (the clients unchanged)."""
        self._mtime = self._read_mtime()
        self.last_reload_at = time.time()
        if self.path is None:
            self.last_error = "the config was not read from a file: nothing to reload"
            return self.last_error
        try:
            registry = Registry(self._auth_of(load_config(self.path)), self._hold_s)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("clients not reloaded, keeping the last good ones: %s", exc)
            return self.last_error
        self.current = registry
        self.last_error = None
        log.info("clients reloaded from %s: %d named", self.path, len(registry.by_name))
        return None

    def _auth_of(self, config: Config) -> AuthConfig:
        """The new `auth`, if its clients name only models this process serves."""
        assert self.path is not None
        for name, spec in {ANONYMOUS: config.auth.anonymous, **config.auth.clients}.items():
            unknown = sorted(set(spec.models or ()) - set(self.models))
            if unknown:
                where = "auth.anonymous" if name == ANONYMOUS else f"auth.clients.{name}"
                raise ConfigError(
                    f"{self.path}: {where}.models: {', '.join(unknown)} not served "
                    "by this process (models change on restart)"
                )
        return config.auth

    def reload_if_changed(self) -> str | None:
        if self._read_mtime() == self._mtime:
            return None
        return self.reload()

    async def run(self, stop: asyncio.Event) -> None:
        """Reload when the config file changes (checked every RELOAD_CHECK_S) until `stop`."""
        while not await pause(stop, RELOAD_CHECK_S):
            self.reload_if_changed()  # logs itself; keeps the last good clients
