"""`store.url` read as a Redis deployment: one endpoint, a Cluster, or a Sentinel-managed primary.

Owns the URL forms (docs/redis.md) and how one is shown without its secrets. Pure: no I/O,
no Redis client (the store builds the client from a `RedisTarget`).

    redis://[user:password@]host[:port][/db]            one endpoint (also rediss://, unix://)
    redis+cluster://[user:password@]host:port[,...]     Cluster: seed nodes (also rediss+cluster)
    redis+sentinel://[user:password@]host:port[,...]/service[/db]
                                                        the primary Sentinel names `service`
                                                        (also rediss+sentinel)

User and password are the data nodes' (percent-encoded). With `rediss` every connection uses
TLS, to Sentinels as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

Mode = Literal["single", "cluster", "sentinel"]

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT = {"single": 6379, "cluster": 6379, "sentinel": 26379}
_NODE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What `store.url` names. `nodes`: the endpoint (single), the seed nodes (cluster) or the
    Sentinels (sentinel); `service`: the primary's name in Sentinel, else None."""

    mode: Mode
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    service: str | None

    def redacted(self, url: str) -> str:
        """`url` without user or password: safe for logs, health and the admin API."""
        scheme = url.split("://", 1)[0]
        if self.mode == "single":
            return _single_redacted(url)
        hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.nodes)
        path = f"/{self.service}/{self.db}" if self.mode == "sentinel" else ""
        return f"{scheme}://{hosts}{path}"


def parse_redis_url(url: str) -> RedisTarget:
    """Read `url`. Raises ValueError saying what is wrong, without repeating the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} (known: {known})")
    mode, tls = _SCHEMES[scheme.lower()]
    if mode == "single":
        return _single(url, tls)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if query:
        raise ValueError(f"{scheme}:// URLs take no query options: use the store's fields")
    credentials, _, hosts = netloc.rpartition("@")
    username, password = _credentials(credentials)
    nodes = tuple(_node(part, _DEFAULT_PORT[mode]) for part in hosts.split(","))
    segments = [unquote(s) for s in path.split("/") if s]
    if mode == "cluster":
        if segments not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only: no path after the hosts")
        return RedisTarget(mode, tls, nodes, username, password, 0, None)
    if not 1 <= len(segments) <= 2:
        raise ValueError("a Sentinel URL names the primary's service: .../SERVICE[/DB]")
    return RedisTarget(mode, tls, nodes, username, password, _db(segments[1:]), segments[0])


def _single(url: str, tls: bool) -> RedisTarget:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return RedisTarget("single", False, (), parts.username, parts.password, 0, None)
    try:
        port = parts.port or _DEFAULT_PORT["single"]
    except ValueError as exc:
        raise ValueError(f"invalid port in the Redis URL ({exc})") from None
    if not parts.hostname:
        raise ValueError("the Redis URL names no host")
    db = _db([s for s in parts.path.split("/") if s])
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return RedisTarget("single", tls, ((parts.hostname, port),), user, password, db, None)


def _credentials(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, sep, password = text.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None)


def _node(text: str, default_port: int) -> tuple[str, int]:
    match = _NODE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid host:port {text!r} in the Redis URL")
    host = match["v6"] or match["host"]
    port = int(match["port"]) if match["port"] else default_port
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {port} in the Redis URL")
    return host, port


def _db(segments: list[str]) -> int:
    if not segments:
        return 0
    if len(segments) > 1 or not segments[0].isdigit():
        raise ValueError("the Redis URL's path must be a database number")
    return int(segments[0])


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _single_redacted(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
