"""Which of a client's body fields go upstream, as what (docs/api.md, "Forwarded fields").

The proxy holds every provider's key: whatever a field does upstream is done on the
operator's account. So a request is admitted field by field, once, before routing:

- a field is one of OpenAI's parameters of its endpoint (upstream.params), or one a
  provider of the model opts in to (`extra_fields` in its config: the sampling extras of an
  open-weight engine), else the request is refused with a 400 naming it, as OpenAI does;
- the policy's `fields.strip` are removed, its `fields.force` set;
- a URL in a content part must be http(s) or a data URL (a 400 names the part);
- a request tied to state kept at one provider (a stored response, a conversation, a stored
  prompt, an MCP tool that runs on the provider's side) is `stateful`: dispatch sends it to
  one provider once, never hedged, never failed over.

An extra field goes only to the providers that list it (`Admitted.omit_for`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.core.errors import InvalidRequest
from proxy.serving.endpoint import Endpoint
from proxy.settings.policy import Fields

# keys whose string a provider may read as a URL to fetch (file_id and file_data too: some
# adapters take a gs:// or s3:// there as the media's location)
_URL_KEYS = frozenset(
    ("url", "image_url", "file_url", "audio_url", "video_url", "file_id", "file_data", "uri")
)
_TEXT_KEYS = frozenset(("text", "arguments", "input_schema", "parameters"))  # not walked
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{1,31}:")  # a URL's scheme
MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Admitted:
    """What admission found: the extra fields present (sent only to the providers that
    list them) and whether the request is stateful (one provider, one attempt)."""

    extras: frozenset[str] = frozenset()
    stateful: bool = False
    media_bytes: int = 0  # data URLs in the prompt: not prompt text (the size estimate)

    def omit_for(self, accepts: frozenset[str]) -> frozenset[str]:
        """The request's extra fields a provider that accepts `accepts` is not sent."""
        return self.extras - accepts if self.extras else self.extras


PLAIN = Admitted()


def admit(
    body: dict[str, Any],
    endpoint: Endpoint,
    rules: Fields,
    extras: Mapping[str, frozenset[str]],
    providers: Iterable[str],
) -> Admitted:
    """Check and shape `body` in place (see the module). `extras`: provider -> its extra
    fields; `providers`: the model's."""
    params = endpoint.params
    unknown = [k for k in body if k not in params and k != "model"]
    found: frozenset[str] = frozenset()
    if unknown:
        accepted = frozenset().union(*(extras.get(p, frozenset()) for p in providers))
        for name in unknown:
            if name not in accepted:
                raise InvalidRequest(
                    f"Unrecognized request argument supplied: {name} (this proxy sends only "
                    "OpenAI's parameters, and the fields a provider of this model lists in its "
                    "extra_fields: docs/api.md)",
                    param=name,
                )
        found = frozenset(unknown)
    for name in rules.strip:
        body.pop(name, None)
    forced = rules.force.get(endpoint.name)
    if forced:
        body.update(forced)
    media = _check_urls(body.get(endpoint.prompt_field), endpoint.prompt_field)
    stateful = bool(endpoint.stateful_fields) and _is_stateful(body, endpoint.stateful_fields)
    return Admitted(found, stateful, media) if found or stateful or media else PLAIN


def _is_stateful(body: Mapping[str, Any], fields: tuple[str, ...]) -> bool:
    """A stored response, conversation or prompt named, or an MCP tool (run by the
    provider against a server the client chose)."""
    if any(body.get(name) for name in fields):
        return True
    tools = body.get("tools")
    if isinstance(tools, list):
        return any(isinstance(t, dict) and t.get("type") == "mcp" for t in tools)
    return False


def _check_urls(prompt: Any, field: str) -> int:
    """Every URL in the prompt's items and their parts (nested objects and lists too:
    `{"file": {"file_url": ...}}`, a tool output's parts) is http(s) or data, else a 400
    naming it. Returns the bytes of the data URLs found (media, not prompt tokens)."""
    if not isinstance(prompt, list):
        return 0
    media = 0
    for i, item in enumerate(prompt):
        media += _walk(item, f"{field}[{i}]", 0)
    return media


def _walk(node: Any, where: str, depth: int) -> int:
    if depth > MAX_DEPTH:
        return 0
    media = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if key in _URL_KEYS:
                    media += _check_url(value, f"{where}.{key}")
            elif isinstance(value, dict | list) and key not in _TEXT_KEYS:
                media += _walk(value, f"{where}.{key}", depth + 1)
    elif isinstance(node, list):
        for j, value in enumerate(node):
            if isinstance(value, dict | list):
                media += _walk(value, f"{where}[{j}]", depth + 1)
    return media


def _check_url(value: str, where: str) -> int:
    """A URL-bearing string: http(s) and data URLs pass (a data URL's length is returned);
    an id or base64 without a scheme passes; any other scheme is a 400 naming the part."""
    head = value[:12].lower()
    if head.startswith("data:"):
        return len(value)
    if head.startswith(("http://", "https://")) or not _SCHEME.match(value[:40]):
        return 0
    scheme = value.split(":", 1)[0][:32]
    raise InvalidRequest(
        f"{where}: only http(s) and data URLs are accepted (got {scheme}:)", param=where
    )
