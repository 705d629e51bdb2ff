"""One probe: the request, sent through the same upstream and TTFT clock as real traffic,
measured to its end, priced.

The prober (probing.prober) decides when and asks the budget; this module only runs a
probe and says what it measured and cost. It does not route and never touches a client's
request.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from proxy.core.domain import Outcome, Pair, Sample, Source
from proxy.settings.policy import Probe
from proxy.settings.pricing import Pricing
from proxy.upstream.base import Upstream
from proxy.upstream.measure import Usage, estimate_prompt_tokens, measure_stream
from proxy.upstream.redact import Redactor

CHAT_PATH = "/chat/completions"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    sample: Sample
    error: str | None  # the failure's text, redacted; None when it succeeded
    cost_usd: float


class ProbeRunner:
    def __init__(
        self, upstreams: Mapping[str, Upstream], pricing: Pricing, redact: Redactor, replica: str
    ) -> None:
        self._upstreams = upstreams
        self.pricing = pricing
        self.redact = redact
        self.replica = replica

    @staticmethod
    def body(upstream_model: str, probe: Probe, prompt_tokens: int | None = None) -> bytes:
        """The probe request: the policy's fixed prompt (or, with `prompt_tokens`, a long
        one of about that many tokens), temperature 0, max_tokens, streamed with usage."""
        content = probe.prompt if prompt_tokens is None else long_prompt(prompt_tokens)
        return orjson.dumps({
            "model": upstream_model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": probe.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        })  # fmt: skip

    def estimate_usd(
        self, pair: Pair, upstream_model: str, probe: Probe, prompt_tokens: int | None = None
    ) -> float:
        """A probe's cost before it is sent: the body's size as prompt tokens (an
        overestimate), max_tokens completion tokens, at the budget's price; with
        `prompt_tokens`, a long probe's."""
        price, _ = self.pricing.for_budget(pair)
        body = self.body(upstream_model, probe, prompt_tokens)
        prompt = estimate_prompt_tokens(len(body))
        return prompt * price.prompt_usd + probe.max_tokens * price.completion_usd

    async def run(
        self, pair: Pair, upstream_model: str, probe: Probe, timeout_s: float,
        prompt_tokens: int | None = None,
    ) -> ProbeResult:  # fmt: skip
        """Send one probe and measure it (first-token timeout `timeout_s`); with
        `prompt_tokens`, a long probe (learning.prefill)."""
        if not self.pricing.resolved:  # the app resolves at start-up; a bare runner here
            await asyncio.to_thread(self.pricing.resolve)
        found, _ = self.pricing.for_budget(pair)
        body = self.body(upstream_model, probe, prompt_tokens)
        usage = Usage()
        clock, outcome, error = await measure_stream(
            self._upstreams[pair.provider], CHAT_PATH, body, timeout_s, usage
        )
        prompt_tokens = estimate_prompt_tokens(len(body))
        sample = clock.sample(
            pair.model, pair.provider, outcome, source=Source.PROBE,
            prompt_tokens=prompt_tokens, replica=self.replica,
        )  # fmt: skip
        cost = _cost(usage, prompt_tokens, probe.max_tokens, found.prompt_usd,
                     found.completion_usd, outcome)  # fmt: skip
        redacted = self.redact.provider_text(error) if error is not None else None
        return ProbeResult(sample, redacted, cost)


def long_prompt(tokens: int) -> str:
    """About `tokens` tokens (4 bytes of request a token, as the proxy estimates prompts)
    of text no earlier probe sent: a nonce first, so that no provider's prefix cache can
    answer it faster than a real prompt of that size."""
    nonce = secrets.token_hex(8)
    words = (f"{nonce[i % 16]}{i % 97:02d}" for i in range(max(1, tokens - 8)))
    return f"Probe {nonce}. Reply with one word: ready.\n" + " ".join(words)


def _cost(
    usage: Usage, prompt_estimate: int, max_tokens: int, prompt_usd: float,
    completion_usd: float, outcome: Outcome,
) -> float:  # fmt: skip
    """Reported tokens x price; the estimate where the stream reported none (a probe cut
    off may still be billed for its prompt; a refused one, HTTP 4xx/429, is not)."""
    if outcome in (Outcome.HTTP_4XX, Outcome.RATE_LIMITED, Outcome.CONNECT_ERROR):
        return 0.0
    prompt = usage.prompt_tokens if usage.prompt_tokens is not None else prompt_estimate
    completion = usage.completion_tokens
    if completion is None:
        completion = max_tokens if outcome is Outcome.OK else 0
    return prompt * prompt_usd + completion * completion_usd
