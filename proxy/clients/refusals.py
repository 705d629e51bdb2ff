"""What a client is told about its limits: OpenAI's x-ratelimit-* headers on every answer,
and the 429 of a refusal (rate limits: `rate_limit_exceeded`; budgets: `insufficient_quota`).

OpenAI's headers, for the limits a client has: `x-ratelimit-limit-requests`,
`-remaining-requests`, `-reset-requests` and the same for `-tokens`; a concurrency cap adds
`x-ratelimit-limit-concurrent` and `-remaining-concurrent` (not OpenAI's). A reset is a
duration in OpenAI's spelling ("250ms", "12.5s", "1m0s"): until the window holds nothing.
Pure: builds values, sends nothing.
"""

from __future__ import annotations

from proxy.core.errors import ClientRateLimited, ProxyError, QuotaExceeded
from proxy.learning.store.base import ClientLimits, ClientUse

CONCURRENT_RETRY_S = 1.0  # a concurrency refusal cannot know when a request ends


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset: 250ms, 12.5s, 1m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def rate_headers(limits: ClientLimits, use: ClientUse) -> list[tuple[bytes, bytes]]:
    """The x-ratelimit-* headers of the client's limits, as of `use` (ASGI's bytes: they
    go on every answer of a limited client)."""
    out: list[tuple[bytes, bytes]] = []
    reset = duration(use.reset_s).encode()
    if limits.requests is not None:
        out += [(b"x-ratelimit-limit-requests", b"%d" % limits.requests),
                (b"x-ratelimit-remaining-requests", b"%d" % max(0, limits.requests - use.requests)),
                (b"x-ratelimit-reset-requests", reset)]  # fmt: skip
    if limits.tokens is not None:
        out += [(b"x-ratelimit-limit-tokens", b"%d" % limits.tokens),
                (b"x-ratelimit-remaining-tokens", b"%d" % max(0, limits.tokens - use.tokens)),
                (b"x-ratelimit-reset-tokens", reset)]  # fmt: skip
    if limits.concurrent is not None:
        left = max(0, limits.concurrent - use.concurrent)
        out += [(b"x-ratelimit-limit-concurrent", b"%d" % limits.concurrent),
                (b"x-ratelimit-remaining-concurrent", b"%d" % left)]  # fmt: skip
    return out


def refusal_error(
    client: str, limits: ClientLimits, use: ClientUse, tokens: int, resets_in_s: float
) -> ProxyError:
    """The 429 for a refused admission. `tokens`: what the request asked for (estimated);
    `resets_in_s`: until the refused budget's period ends (budgets only)."""
    headers = {name.decode(): value.decode() for name, value in rate_headers(limits, use)}
    who = f"client '{client}'"
    refusal = use.refusal
    if refusal in ("day", "month"):
        cap = limits.usd_per_day if refusal == "day" else limits.usd_per_month
        spent = use.usd_day if refusal == "day" else use.usd_month
        when = "00:00 UTC" if refusal == "day" else "the first of next month, 00:00 UTC"
        return QuotaExceeded(
            f"You exceeded your current quota: {who} has a budget of USD {cap:.2f} per "
            f"{refusal} and has spent USD {spent:.4f}. It resets at {when}.",
            resets_in_s=resets_in_s, headers=headers,
        )  # fmt: skip
    if refusal == "concurrent":
        return ClientRateLimited(
            f"Too many concurrent requests for {who}: Limit {limits.concurrent}. Please try "
            "again when one of them has finished.",
            kind="requests", retry_after_s=CONCURRENT_RETRY_S, headers=headers,
        )  # fmt: skip
    if refusal == "too_large":
        return ClientRateLimited(
            f"Request too large for {who} on tokens per min (TPM): Limit {limits.tokens}, "
            f"Requested {tokens}. Ask for fewer max_tokens or send a shorter prompt.",
            kind="tokens", retry_after_s=limits.window_s, headers=headers,
        )  # fmt: skip
    wait = use.retry_after_s if use.retry_after_s is not None else use.reset_s
    if refusal == "tokens":
        return ClientRateLimited(
            f"Rate limit reached for {who} on tokens per min (TPM): Limit {limits.tokens}, "
            f"Used {use.tokens}, Requested {tokens}. Please try again in {duration(wait)}.",
            kind="tokens", retry_after_s=wait, headers=headers,
        )  # fmt: skip
    return ClientRateLimited(
        f"Rate limit reached for {who} on requests per min (RPM): Limit {limits.requests}, "
        f"Used {use.requests}. Please try again in {duration(wait)}.",
        kind="requests", retry_after_s=wait, headers=headers,
    )  # fmt: skip
