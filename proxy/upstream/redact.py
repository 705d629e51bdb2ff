"""Redaction of provider error text before it reaches a client, a log or the decision log.

A provider's error message is foreign text: it may quote the key it was sent ("Incorrect API
key provided: sk-..."), a header, a URL with credentials, or the internal address of the
endpoint. `Redactor` removes every configured secret verbatim, anything shaped like a
credential, and replaces the configured providers' addresses by the providers' names.

Pure: built once from the config (`from_config` in app.py) and passed to whoever turns
provider text into something another party reads. No I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

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
            r"(?i)\b((?:x-)?api[_-]?key|x-goog-api-key|authorization|access[_-]?token|"
            r"secret[_-]?access[_-]?key|client[_-]?secret|password|passwd|token)"
            r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!\[redacted\])[^\s\"'\\,;&}]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # OpenAI-style and similar key formats
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{6,}"), r"\1-" + REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),  # AWS access key id
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), REDACTED),  # Google API key
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
)
# An IPv4 address with an optional port, or Python's ('1.2.3.4', 5678) tuple form.
_ADDRESS = re.compile(r"\(?'?\b\d{1,3}(?:\.\d{1,3}){3}\b'?(?:(?::|,\s*)\d{1,5})?\)?")


class Redactor:
    """Removes secrets and internal addresses from text."""

    def __init__(
        self, secrets: Iterable[str], addresses: Mapping[str, str], *, hide_ips: bool = True
    ) -> None:
        """`secrets`: literal values never to show; `addresses`: "host:port" or "host" ->
        the name to show instead (a provider's name); `hide_ips`: replace every other IPv4
        address too (for text others read; the operator's own log keeps them)."""
        literal = {s for s in secrets if len(s) >= MIN_SECRET_LEN}
        # longest first, so that a secret containing another is removed whole
        self._secrets = sorted(literal, key=len, reverse=True)
        self._addresses = sorted(addresses.items(), key=lambda kv: len(kv[0]), reverse=True)
        self._hide_ips = hide_ips

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for address, name in self._addresses:
            if address in text:
                text = text.replace(address, name)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return _ADDRESS.sub("<address>", text) if self._hide_ips else text

    def provider_text(self, text: str) -> str:
        """A provider's message as others may read it: redacted, then cut to a length."""
        cleaned = self(text)
        if len(cleaned) > MAX_PROVIDER_TEXT:
            cleaned = cleaned[:MAX_PROVIDER_TEXT] + "..."
        return cleaned

    def bytes(self, data: bytes) -> bytes:
        """`self` over UTF-8 bytes (an SSE error event relayed to a client)."""
        return self(data.decode("utf-8", "replace")).encode()


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
    secrets.extend(k.get_secret_value() for k in config.auth.admin_keys)
    if isinstance(config.store, RedisStoreConfig):
        store_url = urlsplit(config.store.url.get_secret_value())
        if store_url.password:
            secrets.append(store_url.password)
    return Redactor(secrets, address_names(urls), hide_ips=hide_ips)
