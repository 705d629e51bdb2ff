"""Request controls as clients send them: OpenRouter's `provider` object in the body, or
headers, parsed once and checked against the model's policy (routing.steering applies them).

Clients speak OpenRouter's shape: a `provider` object in the request body (`order`, `only`,
`ignore`, `allow_fallbacks`, `sort` as a string or `{by, partition}`, `max_price`,
`preferred_max_latency`, `preferred_min_throughput` as a number or percentile cutoffs), or,
for clients that cannot add body fields, headers (`x-ttft-router-provider-only: a,b`,
`-order`, `-ignore`, `-allow-fallbacks`, `-sort`, `-max-price-prompt`,
`-max-price-completion`, `-preferred-max-latency: 2` or `p50=1,p90=3`,
`-preferred-min-throughput`) and an affinity key (`x-ttft-router-affinity`, or the body's
`user`). `parse()` takes the `provider` field
out of the already parsed body (it never goes upstream) and checks every control against the
model's policy and the client's grants: a control neither the policy (`client_controls`) nor
the client's key (`auth.clients.*.controls`) grants is a PermissionDenied (403); a provider
the model does not have or the policy rules out, or controls that contradict each other,
are an InvalidRequest naming it. docs/request-controls.md tells the whole story.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from proxy.core.errors import InvalidRequest, PermissionDenied
from proxy.routing.preferences import PERCENTILES, Cutoffs
from proxy.routing.steering import PARTITIONS, SORTS, Controls
from proxy.settings.auth import CLIENT_CONTROLS
from proxy.settings.policy import ModelPolicy

BODY_FIELD = "provider"
HEADER_PREFIX = b"x-ttft-router-provider-"
AFFINITY_HEADER = b"x-ttft-router-affinity"
BODY_KEYS = ("order", "only", "ignore", "allow_fallbacks", "sort", "max_price",
             "preferred_max_latency", "preferred_min_throughput")  # fmt: skip
# header suffix -> (control, the body key it stands for)
HEADER_KEYS = {
    b"order": "order",
    b"only": "only",
    b"ignore": "ignore",
    b"allow-fallbacks": "allow_fallbacks",
    b"sort": "sort",
    b"max-price-prompt": "max_price.prompt",
    b"max-price-completion": "max_price.completion",
    b"preferred-max-latency": "preferred_max_latency",
    b"preferred-min-throughput": "preferred_min_throughput",
}
CUTOFF_UNITS = {"preferred_max_latency": "seconds", "preferred_min_throughput": "tokens/s"}
# the body fields that bound an answer's length, newest name first (routing.total)
OUTPUT_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
MAX_KEY_LENGTH = 256


def parse(
    body: dict[str, Any],
    headers: Sequence[tuple[bytes, bytes]],
    policy: ModelPolicy,
    providers: Collection[str],
    allowed: Collection[str],
) -> Controls | None:
    """The request's controls, validated; None when it has none (the body's `provider`
    field, if any, is removed from `body`). `allowed`: the controls this client may use on
    this model (clients.permissions.allowed_controls). Raises InvalidRequest naming the
    control, PermissionDenied (403) for a control not granted."""
    raw = body.pop(BODY_FIELD, None)
    found: dict[str, Any] = {}
    given: dict[str, str] = {}
    if raw is not None:
        _from_body(raw, found, given)
    key: str | None = None
    for name, value in headers:
        if name.startswith(b"x-ttft-router-"):
            key = _from_header(name, value, found, given) or key
    if (
        key is None
        and policy.affinity.enabled
        and policy.affinity.from_user
        and "affinity" in allowed  # else `user` is just OpenAI's field
    ):
        user = body.get("user")
        if isinstance(user, str) and user:
            key, given["affinity"] = user[:MAX_KEY_LENGTH], "body user"
    if not given:
        return None
    controls = _build(found, key, given, _requested_output(body))
    _check(controls, policy, providers, allowed)
    return controls


def _from_body(raw: Any, found: dict[str, Any], given: dict[str, str]) -> None:
    if not isinstance(raw, dict):
        raise InvalidRequest("'provider' must be an object (OpenRouter's provider routing "
                             "fields)", param=BODY_FIELD)  # fmt: skip
    for name, value in raw.items():
        if name not in BODY_KEYS:
            raise InvalidRequest(
                f"provider.{name} is not supported (supported: {', '.join(BODY_KEYS)})",
                param=f"provider.{name}",
            )
        if value is None:
            continue
        if name == "max_price":
            _max_price(value, found)
        else:
            found[name] = value
        given[name] = "body"


def _max_price(value: Any, found: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest("provider.max_price must be an object {prompt, completion} (USD "
                             "per million tokens)", param="provider.max_price")  # fmt: skip
    for part, limit in value.items():
        if part not in ("prompt", "completion"):
            raise InvalidRequest(
                f"provider.max_price.{part} is not supported (supported: prompt, completion)",
                param=f"provider.max_price.{part}",
            )
        found[f"max_price.{part}"] = limit


def _from_header(
    name: bytes, value: bytes, found: dict[str, Any], given: dict[str, str]
) -> str | None:
    """One x-ttft-router-* header into `found`; returns the affinity key if it is one."""
    text = value.decode("latin-1").strip()
    if name == AFFINITY_HEADER:
        given["affinity"] = "header"
        return text[:MAX_KEY_LENGTH] or None
    if not name.startswith(HEADER_PREFIX):
        return None  # another header of ours (x-ttft-router-...): not a control
    suffix = name[len(HEADER_PREFIX) :]
    key = HEADER_KEYS.get(suffix)
    header = name.decode("latin-1")
    if key is None:
        known = ", ".join(k.decode() for k in HEADER_KEYS)
        raise InvalidRequest(f"header {header} is not a request control (known suffixes: "
                             f"{known})", param=header)  # fmt: skip
    control = key.split(".", 1)[0]
    if given.get(control) == "body" or key in found:
        raise InvalidRequest(f"{header} contradicts provider.{key} in the body: give one",
                             param=header)  # fmt: skip
    found[key] = _header_value(key, text, header)
    given[control] = "header"
    return None


def _header_value(key: str, text: str, header: str) -> Any:
    if key in ("order", "only", "ignore"):
        return [p.strip() for p in text.split(",") if p.strip()]
    if key == "allow_fallbacks":
        if text.lower() not in ("true", "false"):
            raise InvalidRequest(f"{header} must be true or false", param=header)
        return text.lower() == "true"
    if key.startswith("max_price."):
        try:
            return float(text)
        except ValueError:
            raise InvalidRequest(f"{header} must be a number (USD per million tokens)",
                                 param=header) from None  # fmt: skip
    if key in CUTOFF_UNITS:
        return _cutoff_header(text, header)
    return text


def _cutoff_header(text: str, header: str) -> float | dict[str, float]:
    """'2.5' (p50) or 'p50=1,p90=3' -> a number or percentile cutoffs (checked later)."""
    try:
        if "=" not in text:
            return float(text)
        pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise InvalidRequest(f"{header} must be a number or percentile cutoffs like "
                             "p50=1,p90=3", param=header) from None  # fmt: skip


def _names(found: dict[str, Any], key: str) -> tuple[str, ...]:
    value = found[key]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise InvalidRequest(f"provider.{key} must be a list of provider names",
                             param=f"provider.{key}")  # fmt: skip
    return tuple(dict.fromkeys(value))


def _price_limit(found: dict[str, Any], key: str) -> float | None:
    value = found.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidRequest(f"provider.{key} must be a number >= 0 (USD per million tokens)",
                             param=f"provider.{key}")  # fmt: skip
    return float(value)


def _cutoffs(found: dict[str, Any], key: str) -> Cutoffs | None:
    """OpenRouter's number (p50's cutoff) or object {p50, p75, p90, p99} (any of them)."""
    value = found.get(key)
    if value is None:
        return None
    unit, param = CUTOFF_UNITS[key], f"provider.{key}"
    if not isinstance(value, dict):
        value = {"p50": value}
    unknown = [name for name in value if name not in PERCENTILES]
    if unknown or not value:
        raise InvalidRequest(f"{param} must be a number ({unit}, the p50) or an object of "
                             f"{', '.join(PERCENTILES)}", param=param)  # fmt: skip
    limits = []
    for name in PERCENTILES:
        limit = value.get(name)
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit >= 0:
            raise InvalidRequest(f"{param}.{name} must be a number >= 0 ({unit})",
                                 param=f"{param}.{name}")  # fmt: skip
        limits.append((name, float(limit)))
    return Cutoffs(tuple(limits)) if limits else None


def _sort(found: dict[str, Any]) -> tuple[str | None, str | None]:
    """OpenRouter's `sort`: a string, or {by, partition} -> (by, partition)."""
    given, partition = found.get("sort"), None
    sort = given
    if isinstance(given, dict):
        extra = [k for k in given if k not in ("by", "partition")]
        if extra:
            raise InvalidRequest(f"provider.sort.{extra[0]} is not supported (supported: by, "
                                 "partition)", param=f"provider.sort.{extra[0]}")  # fmt: skip
        sort, partition = given.get("by"), given.get("partition")
        if partition is not None and partition not in PARTITIONS:
            raise InvalidRequest(f"provider.sort.partition must be one of "
                                 f"{', '.join(PARTITIONS)} (got {partition!r})",
                                 param="provider.sort.partition")  # fmt: skip
    if sort is not None and sort not in SORTS:
        raise InvalidRequest(f"provider.sort must be one of {', '.join(SORTS)}, or an "
                             f"object {{by, partition}} (got {sort!r})",
                             param="provider.sort")  # fmt: skip
    return sort, partition


def _requested_output(body: dict[str, Any]) -> int | None:
    """The answer length the request bounds (max_tokens and its other names), if any."""
    for name in OUTPUT_LIMITS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _build(
    found: dict[str, Any], key: str | None, given: dict[str, str], output_tokens: int | None
) -> Controls:
    fallbacks = found.get("allow_fallbacks")
    if fallbacks is not None and not isinstance(fallbacks, bool):
        raise InvalidRequest("provider.allow_fallbacks must be a boolean",
                             param="provider.allow_fallbacks")  # fmt: skip
    sort, partition = _sort(found)
    return Controls(
        order=_names(found, "order") if "order" in found else (),
        only=_names(found, "only") if "only" in found else None,
        ignore=_names(found, "ignore") if "ignore" in found else (),
        allow_fallbacks=fallbacks,
        sort=sort,
        max_prompt=_price_limit(found, "max_price.prompt"),
        max_completion=_price_limit(found, "max_price.completion"),
        affinity_key=key,
        given=given,
        partition=partition,
        max_latency=_cutoffs(found, "preferred_max_latency"),
        min_throughput=_cutoffs(found, "preferred_min_throughput"),
        output_tokens=output_tokens,
    )


def _check(
    controls: Controls, policy: ModelPolicy, providers: Collection[str], allowed: Collection[str]
) -> None:
    """Raise PermissionDenied for a control not granted, InvalidRequest for a provider the
    model lacks or the policy rules out, or controls that contradict each other."""
    for name in controls.given:
        if name not in allowed:
            granted = ", ".join(c for c in CLIENT_CONTROLS if c in allowed) or "none"
            where = str(AFFINITY_HEADER, "ascii") if name == "affinity" else f"provider.{name}"
            raise PermissionDenied(
                f"request control {where} is not granted to this key for this model "
                f"(granted: {granted})", param=where,
            )  # fmt: skip
    if controls.given.get("affinity") == "header" and not policy.affinity.enabled:
        raise InvalidRequest("x-ttft-router-affinity: affinity is off for this model (policy "
                             "affinity.enabled)", param="x-ttft-router-affinity")  # fmt: skip
    for name in ("order", "only", "ignore"):
        for p in getattr(controls, name) or ():
            if p not in providers:
                raise InvalidRequest(
                    f"provider.{name}: '{p}' is not a provider of this model (providers: "
                    f"{', '.join(providers)})", param=f"provider.{name}",
                )  # fmt: skip
            if name != "ignore" and not policy.is_usable(p):
                raise InvalidRequest(
                    f"provider.{name}: '{p}' is ruled out by the model's policy (exclude/allow)",
                    param=f"provider.{name}",
                )
    ignored = set(controls.ignore)
    for name in ("order", "only"):
        both = [p for p in getattr(controls, name) or () if p in ignored]
        if both:
            raise InvalidRequest(f"provider.{name} and provider.ignore both name "
                                 f"{', '.join(both)}", param=f"provider.{name}")  # fmt: skip
    if controls.only is not None:
        outside = [p for p in controls.order if p not in controls.only]
        if outside:
            raise InvalidRequest(f"provider.order names {', '.join(outside)}, which "
                                 "provider.only leaves out", param="provider.order")  # fmt: skip
        if not controls.only:
            raise InvalidRequest("provider.only is empty", param="provider.only")
