"""Redaction of provider error text before it reaches a client, a log or the decision log.

A provider's error message is foreign text: it may quote the key it was sent ("Incorrect API
key provided: sk-..."), a header, a URL with credentials, or the internal address of the
endpoint. `Redactor` removes every configured secret verbatim, anything shaped like a
credential, and replaces the configured providers' addresses by the providers' names.

Pure: built once from the config (`from_config` in app.py) and passed to whoever turns
provider text into something another party reads. No I/O.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

import orjson

from proxy.settings.config import Config, LiteLLMProvider, RedisStoreConfig

REDACTED = "[redacted]"
# Literal secrets shorter than this are not searched for: they would redact ordinary words.
MIN_SECRET_LEN = 6
# Text kept from a provider's error message (after redaction).
MAX_PROVIDER_TEXT = 300

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <token>
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=:-]{4,}"), r"\1 " + REDACTED),
    # header or parameter names that carry credentials, in JSON, headers or query strings
    (
        re.compile(
            r"(?i)\b((?:x-)?api[_-]?key|x-goog-api-key|authorization|(?:access|refresh|id|"
            r"auth|api|session|bearer)[_-]?token|secret[_-]?access[_-]?key|client[_-]?secret|"
            r"password|passwd)"
            r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!\[redacted\])[^\s\"'\\,;&}]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # a bare "token" only as a key (`"token": "..."`, `token=...`), not English ("first token: x")
    (
        re.compile(r"(?i)(\"token\\?\"\s*:\s*\\?\"|\btoken=)(?!\[redacted\])[^\s\"'\\,;&}]+"),
        r"\1" + REDACTED,
    ),
    # OpenAI-style and similar key formats
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{6,}"), r"\1-" + REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), REDACTED),  # Google API key
    (re.compile(r"\bya29\.[0-9A-Za-z_-]{10,}"), REDACTED),  # Google OAuth access token
    # a JWT: base64url header and payload (both JSON objects: "eyJ"), then the signature
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"), REDACTED),
    # an Azure SAS (or any signed URL's) signature parameter
    (
        re.compile(r"(?i)([?&]|\b)(sig|signature|x-amz-signature)=[^&\s\"'\\]+"),
        r"\1\2=" + REDACTED,
    ),
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
)
# An IPv4 address with an optional port, or Python's ('1.2.3.4', 5678) tuple form.
_ADDRESS = re.compile(r"\(?'?\b\d{1,3}(?:\.\d{1,3}){3}\b'?(?:(?::|,\s*)\d{1,5})?\)?")
# Candidates for IPv6 addresses (checked with ipaddress before they are replaced).
_IPV6 = re.compile(
    r"\[?(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f.]{0,15}(?:%\w+)?(?![\w:])\]?"
    r"(?::\d{1,5})?"
)
_HOSTS: tuple[tuple[re.Pattern[str], str], ...] = (
    # the host of any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?!<)[^/\s:@\"'<>\\]+"), r"\1<host>"),
    # host names of private networks and clusters
    (
        re.compile(
            r"(?i)\b(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:internal|local|localdomain|"
            r"lan|corp|home|intranet|svc|cluster\.local)\b(?::\d{1,5})?"
        ),
        "<host>",
    ),
    # host:port, and localhost
    (
        re.compile(r"(?i)\b(?:[a-z0-9-]+\.)+[a-z][a-z0-9-]*:\d{2,5}\b|\blocalhost(?::\d{1,5})?\b"),
        "<address>",
    ),
)
_ESCAPED = re.compile(r"\\u([0-9A-Fa-f]{4})|\\/")
_ERROR_TYPES = frozenset(("error", "response.failed"))


class Redactor:
    """Removes secrets and internal addresses from text."""

    def __init__(
        self, secrets: Iterable[str], addresses: Mapping[str, str], *, hide_ips: bool = True
    ) -> None:
        """`secrets`: literal values never to show; `addresses`: "host:port" or "host" ->
        the name to show instead (a provider's name); `hide_ips`: replace every other IP
        address and host name too (for text others read; the operator's own log keeps them)."""
        literal = {form for s in secrets if len(s) >= MIN_SECRET_LEN for form in _forms(s)}
        # longest first, so that a secret containing another is removed whole
        self._secrets = sorted(literal, key=len, reverse=True)
        self._addresses = sorted(addresses.items(), key=lambda kv: len(kv[0]), reverse=True)
        self._hide_ips = hide_ips

    def __call__(self, text: str) -> str:
        """`text` without secrets (also where they are URL-encoded or JSON-escaped: when its
        decoded form shows one, the decoded form is what is returned, redacted)."""
        if not text:
            return text
        cleaned = self._redact(text)
        decoded = _decoded(cleaned)
        if decoded != cleaned:
            again = self._redact(decoded)
            if again != decoded:
                return again
        return cleaned

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for address, name in self._addresses:
            if address in text:
                text = text.replace(address, name)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        if not self._hide_ips:
            return text
        text = _ADDRESS.sub("<address>", text)
        if ":" in text:
            text = _IPV6.sub(_ipv6_or_same, text)
        for pattern, replacement in _HOSTS:
            text = pattern.sub(replacement, text)
        return text

    def provider_text(self, text: str) -> str:
        """A provider's message as others may read it: redacted, then cut to a length."""
        cleaned = self(text)
        if len(cleaned) > MAX_PROVIDER_TEXT:
            cleaned = cleaned[:MAX_PROVIDER_TEXT] + "..."
        return cleaned

    def _event(self, block: bytes) -> bytes:
        lines = block.split(b"\n")
        data = [line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:")]
        if not data or data == [b"[DONE]"]:
            return block
        payload = b"\n".join(data)
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self(block.decode("utf-8", "replace")).encode()  # not JSON: as text
        if not _is_error(value):
            return block
        other = [line for line in lines if not line.startswith(b"data:")]
        return b"\n".join([*other, b"data: " + orjson.dumps(self._json(value))])

    def _body(self, data: bytes) -> bytes:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self(data.decode("utf-8", "replace")).encode()
        return orjson.dumps(self._json(value))

    def _json(self, value: Any) -> Any:
        """Every string of a JSON value redacted (keys and values)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self._json(v) for v in value]
        if isinstance(value, dict):
            return {self(k): self._json(v) for k, v in value.items()}
        return value

    def bytes(self, data: bytes) -> bytes:
        """`data` as others may read it: server-sent events, or one body (JSON or text).

        Of events, only a provider's error events are rewritten (the others, content with a
        token "error" among them, pass byte for byte). A JSON value has each of its strings
        redacted decoded, so no escape hides a secret, and is serialised again."""
        if data.startswith((b"data:", b"event:", b":")):
            return b"\n\n".join(self._event(block) for block in data.split(b"\n\n"))
        return self._body(data)


def _forms(secret: str) -> set[str]:
    """A secret as it may be written: itself, JSON-escaped, URL-encoded."""
    escaped = orjson.dumps(secret).decode()[1:-1]
    return {secret, escaped, escaped.replace("/", "\\/"), quote(secret, safe=""),
            quote_plus(secret, safe="")}  # fmt: skip


def _decoded(text: str) -> str:
    """`text` with URL escapes and JSON's \\uXXXX and \\/ escapes decoded."""
    if "%" in text:
        text = unquote(text)
    if "\\" in text:
        text = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else "/", text)
    return text


def _ipv6_or_same(match: re.Match[str]) -> str:
    """`<address>` for a real IPv6 address (bracketed, maybe with a port), else the text."""
    candidate = match.group(0)
    host = candidate.lstrip("[").split("]")[0]
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return candidate
    return "<address>"


def _is_error(value: Any) -> bool:
    """A provider's error object: chat's `{"error": ...}` (no choices), vLLM's
    `{"object": "error"}`, the Responses API's `error` and `response.failed` events."""
    if not isinstance(value, dict):
        return False
    if value.get("error") is not None and not value.get("choices"):
        return True
    return value.get("object") == "error" or value.get("type") in _ERROR_TYPES


def address_names(urls: Mapping[str, str]) -> dict[str, str]:
    """{"host:port": name, "host": name} for each provider's base URL {name: url}."""
    out: dict[str, str] = {}
    for name, url in urls.items():
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        out[f"{host}:{port}"] = f"provider {name}"
        out[f"('{host}', {port})"] = f"provider {name}"
        if parts.netloc:
            out[parts.netloc] = f"provider {name}"
        out[url.rstrip("/")] = f"provider {name}"
    return out


_SECRET_PARAM = re.compile(r"(?i)key|secret|token|password|credential")


class LogRedaction(logging.Filter):
    """Defence in depth for the process log: every record's text passes a secrets-only
    Redactor, whatever logged it (a library that logs a request, an exception's text)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


def redact_logs(config: Config) -> None:
    """Put LogRedaction on every handler of the root logger (call after configuring it)."""
    redaction = LogRedaction(from_config(config, hide_ips=False))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redaction)


def from_config(config: Config, *, hide_ips: bool = True) -> Redactor:
    """Every secret the config holds, and every provider's address."""
    secrets: list[str] = []
    urls: dict[str, str] = {}
    for name, provider in config.providers.items():
        if provider.api_key is not None:
            secrets.append(provider.api_key.get_secret_value())
        secrets.extend(provider.headers.values())
        if isinstance(provider, LiteLLMProvider):
            params = provider.params.items()
            secrets.extend(v for k, v in params if isinstance(v, str) and _SECRET_PARAM.search(k))
            if provider.api_base is not None:
                urls[name] = str(provider.api_base)
        else:
            urls[name] = provider.url
    secrets.extend(k.get_secret_value() for k in config.auth.api_keys)
    secrets.extend(key for spec in config.auth.clients.values() for key in spec.secrets())
    secrets.extend(k.get_secret_value() for k in config.auth.admin_keys)
    if isinstance(config.store, RedisStoreConfig):
        store_url = urlsplit(config.store.url.get_secret_value())
        if store_url.password:
            secrets.append(store_url.password)
    return Redactor(secrets, address_names(urls), hide_ips=hide_ips)
