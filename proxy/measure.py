"""One attempt -> one Sample: the TTFT clock and censoring, and nothing else.

The clock starts when the upstream request is sent and stops at the first streamed chunk
that carries output (upstream.sse.carries_output), not at headers or the role-only chunk.
Time to first byte is kept beside it. An attempt cut off before its first token (timeout,
client gone, hedge loser) is censored at the time it was cut off.
"""

from __future__ import annotations

import time

from proxy.domain import Outcome, Sample, Source
from proxy.upstream.sse import EventSplitter, carries_output, iter_data, parse_payload


class AttemptClock:
    """Started at send; `first_byte()`/`first_token()` mark the moments (first call wins)."""

    __slots__ = ("started", "ttfb_s", "ttft_s", "wall_start")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.wall_start = time.time()
        self.ttfb_s: float | None = None
        self.ttft_s: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def first_byte(self) -> None:
        if self.ttfb_s is None:
            self.ttfb_s = self.elapsed()

    def first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = self.elapsed()
            if self.ttfb_s is None:
                self.ttfb_s = self.ttft_s

    def sample(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        *,
        source: Source = Source.PASSIVE,
        prompt_tokens: int = 0,
        replica: str = "",
    ) -> Sample:
        """The attempt's sample. Without a first token, TIMEOUT and CANCELLED are censored
        at the elapsed time (TTFT > elapsed); other failures carry no latency."""
        elapsed = self.elapsed()
        censored = None
        if self.ttft_s is None and outcome in (Outcome.TIMEOUT, Outcome.CANCELLED):
            censored = elapsed
        return Sample(
            model=model,
            provider=provider,
            outcome=outcome,
            ttft_s=self.ttft_s,
            timestamp=self.wall_start,
            ttfb_s=self.ttfb_s,
            total_s=elapsed,
            censored_at_s=censored,
            source=source,
            prompt_tokens=prompt_tokens,
            replica=replica,
        )


class FirstTokenWatch:
    """Feeds raw stream bytes until the first output-carrying event.

    `feed()` returns the whole events completed so far (to forward), and sets
    `seen_output` once one of them carries output, stopping the clock.
    """

    __slots__ = ("clock", "seen_output", "splitter", "upstream_error")

    def __init__(self, clock: AttemptClock) -> None:
        self.clock = clock
        self.splitter = EventSplitter()
        self.seen_output = False
        self.upstream_error: dict[str, object] | None = None

    def feed(self, data: bytes) -> bytes:
        self.clock.first_byte()
        events = self.splitter.feed(data)
        if events and not self.seen_output:
            for payload in iter_data(events):
                chunk = parse_payload(payload)
                if chunk is None:
                    continue
                if "error" in chunk and not chunk.get("choices"):
                    self.upstream_error = chunk
                    break
                if carries_output(chunk):
                    self.seen_output = True
                    self.clock.first_token()
                    break
        return events


def estimate_prompt_tokens(body_len: int) -> int:
    """A cheap prompt-size estimate (~4 bytes of request JSON per token)."""
    return body_len // 4
