"""What a bench run shows while it runs: a live rich table, or plain lines when not a terminal.

Per pair: warm-ups and counted requests done, current median and p95 of the counted
samples (from `stats.compute_score`), errors, and the last TTFT.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from proxy.core.domain import Pair, Sample
from proxy.learning.stats import compute_score
from proxy.method.plan import Judgement, Method
from proxy.method.report import format_seconds
from proxy.method.samplefile import Record

PLAIN_EVERY_S = 5.0


class Tally:
    """Counted samples and warm-ups per pair, as they arrive."""

    def __init__(self, method: Method, judgement: Judgement) -> None:
        self.method = method
        self.judgement = judgement
        self.warmups: dict[Pair, int] = {s.pair: 0 for s in method.pairs}
        self.counted: dict[Pair, list[Sample]] = {s.pair: [] for s in method.pairs}
        self.last: dict[Pair, Sample] = {}
        self.rounds_left: int | None = None
        self.started = time.monotonic()

    def add(self, record: Record) -> None:
        pair = record.sample.pair
        if record.phase == "warmup":
            self.warmups[pair] += 1
        else:
            self.counted[pair].append(record.sample)
        self.last[pair] = record.sample

    @property
    def done(self) -> int:
        return sum(self.warmups.values()) + sum(map(len, self.counted.values()))

    @property
    def total(self) -> int:
        return len(self.method.pairs) * (self.method.warmup + self.method.counted_per_pair)

    @property
    def errors(self) -> int:
        return sum(1 for c in self.counted.values() for s in c if s.outcome.is_error)

    def table(self) -> Table:
        m = self.method
        table = Table(box=None, pad_edge=False, caption="times in seconds")
        for name in ("model", "provider", "warm-up", "counted", "p50", "p95", "errors", "last"):
            table.add_column(name, justify="left" if name in ("model", "provider") else "right")
        now = time.time()
        for spec in m.pairs:
            samples = self.counted[spec.pair]
            params = self.judgement.window_params(spec.model)
            score = compute_score(spec.pair, samples, params, now)
            last = self.last.get(spec.pair)
            table.add_row(
                spec.model, spec.provider, f"{self.warmups[spec.pair]}/{m.warmup}",
                f"{len(samples)}/{m.counted_per_pair}", _secs(score.median), _secs(score.p95),
                Text(str(score.n_errors), style="red" if score.n_errors else ""),
                _last(last),
            )  # fmt: skip
        return table


def _secs(value: float | None) -> str:
    return format_seconds(value, unit="")


def _last(sample: Sample | None) -> str:
    if sample is None:
        return ""
    if sample.ttft_s is not None and not sample.outcome.is_error:
        return _secs(sample.ttft_s)
    return sample.outcome.value


class LiveProgress:
    """A rich Live table on stderr, redrawn a few times a second."""

    def __init__(self, tally: Tally, console: Console | None = None) -> None:
        self.tally = tally
        self._live = Live(get_renderable=self._render, console=console or Console(stderr=True),
                          refresh_per_second=4, transient=False)  # fmt: skip

    def _render(self) -> RenderableType:
        t = self.tally
        elapsed = time.monotonic() - t.started
        left = "" if t.rounds_left is None else f", {t.rounds_left} rounds to go"
        status = Text(f"{t.done}/{t.total} requests, {t.errors} errors, {elapsed:.0f} s{left}"
                      " · Ctrl-C stops, rerun resumes")  # fmt: skip
        return Group(t.table(), status)

    def add(self, record: Record) -> None:
        self.tally.add(record)

    def round_done(self, rounds_left: int) -> None:
        self.tally.rounds_left = rounds_left

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._live.__exit__(kind, exc, tb)


class PlainProgress:
    """One line on stderr every few seconds (for logs and pipes)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._next_at = 0.0

    def add(self, record: Record) -> None:
        self.tally.add(record)

    def round_done(self, rounds_left: int) -> None:
        self.tally.rounds_left = rounds_left
        now = time.monotonic()
        if now >= self._next_at or rounds_left == 0:
            self._next_at = now + PLAIN_EVERY_S
            t = self.tally
            print(f"bench: {t.done}/{t.total} requests, {t.errors} errors, "
                  f"{rounds_left} rounds to go", file=sys.stderr, flush=True)  # fmt: skip

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
