"""A request's expected total time on a pair: its predicted TTFT plus its output at the pair's
decode throughput. Pure: reads a Score, sends and changes nothing.

    total = TTFT + output tokens / throughput p50

TTFT is the typical one: the pair's prefill line at the request's prompt size when the
latency model identified it (`Score.prefill`, learning.prefill), else the window's median.
Output tokens are the request's own `max_tokens` when it names one (an upper bound: an
answer may stop sooner), else the pair's typical answer length (`Throughput.output_tokens`).
Steering quotes it beside `sort: "throughput"` and OpenRouter's latency and throughput
preferences (routing.preferences).
"""

from __future__ import annotations

from proxy.core.domain import Score


def predicted_ttft_s(score: Score, prompt_tokens: int | None = None) -> float | None:
    """The typical TTFT of a request with `prompt_tokens` (None: size unknown) on the pair;
    None when the pair has no latency observation."""
    prefill = score.prefill
    if prompt_tokens is not None and prefill is not None and prefill.identified:
        return prefill.predict_s(prompt_tokens)
    return score.median


def output_tokens_of(score: Score, requested: int | None) -> float | None:
    """The output a request expects: its own max_tokens, else the pair's typical length."""
    if requested is not None:
        return float(requested)
    return None if score.throughput is None else score.throughput.output_tokens


def expected_total_s(
    score: Score, requested_tokens: int | None = None, prompt_tokens: int | None = None
) -> float | None:
    """Seconds until the whole answer is in: predicted TTFT + output / throughput p50.
    None when the pair's TTFT or throughput is not measured yet."""
    ttft = predicted_ttft_s(score, prompt_tokens)
    tokens = output_tokens_of(score, requested_tokens)
    if ttft is None or tokens is None or score.throughput is None:
        return None
    return ttft + max(tokens - 1.0, 0.0) / score.throughput.p50
