"""The bench report: per pair figures (from `stats.compute_score`), verdicts, best per model.

Owns the rows and their renderings: a rich table for the terminal, markdown, CSV and JSON
files. Computes no statistic of its own: every figure comes from `compute_score` over the
counted samples of a pair, and the verdict band from `stats.cv_band` with the policy's
thresholds. Files are written whole or not at all (`atomic_write`).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.table import Table

from proxy.core.domain import Sample, Score
from proxy.learning.decode import PERCENTILES
from proxy.learning.published import Span
from proxy.learning.stats import compute_score, cv_band
from proxy.method.plan import METHOD_REQUESTS, Judgement, PairSpec
from proxy.method.samplefile import Header, RunLog, atomic_write
from proxy.method.sizes import SizeRow, Slope, size_rows, slopes
from proxy.routing.ranking import OBJECTIVES

UNPROVEN = "unproven"


@dataclass(frozen=True, slots=True)
class Row:
    spec: PairSpec
    score: Score
    requests: int  # counted requests, whatever their outcome
    cold_count: int
    verdict: str
    is_best: bool = False

    def to_dict(self) -> dict[str, Any]:
        s = self.score
        return {
            "model": self.spec.model,
            "provider": self.spec.provider,
            "upstream_model": self.spec.upstream_model,
            "requests": self.requests,
            "n": s.n,
            "errors": s.n_errors,
            "error_rate": s.error_rate,
            "timeouts": s.n_censored,
            "median_s": s.median,
            "p90_s": s.p90,
            "p95_s": s.p95,
            "p99_s": s.p99,
            "mean_s": s.mean,
            "std_s": s.std,
            "cv": s.cv,
            "std_over_median": s.std_over_median,
            "p95_over_p50": s.tail_ratio,
            "cold_start_like": self.cold_count,
            "verdict": self.verdict,
            "is_best": self.is_best,
            **{f"tokens_per_s_{p}": _rate(s, p) for p in PERCENTILES},
        }


def _rate(score: Score, name: str) -> float | None:
    """The score's decode throughput percentile `name` in tokens/s; None: not measured."""
    return None if score.throughput is None else score.throughput.percentile(name)


@dataclass(frozen=True, slots=True)
class Report:
    header: Header
    judgement: Judgement
    rows: list[Row]
    samples: dict[PairSpec, list[Sample]]  # counted samples per pair, oldest first
    generated: float
    by_size: list[SizeRow] = field(default_factory=list)  # with --prompt-tokens: pair x size
    slopes: list[Slope] = field(default_factory=list)  # with several sizes: per pair

    def best(self, model: str) -> Row | None:
        return next((r for r in self.rows if r.spec.model == model and r.is_best), None)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.spec.model for r in self.rows))


def build_report(log: RunLog, judgement: Judgement | None = None) -> Report:
    """Rows for every pair of the run, from its counted samples (warm-ups left out)."""
    judgement = judgement or log.header.judgement
    now = time.time()
    samples: dict[PairSpec, list[Sample]] = {spec: [] for spec in log.header.method.pairs}
    by_pair = {spec.pair: spec for spec in samples}
    for record in log.counted():
        samples[by_pair[record.sample.pair]].append(record.sample)
    for pair_samples in samples.values():
        pair_samples.sort(key=lambda s: s.timestamp)
    rows = [_row(spec, s, judgement, now) for spec, s in samples.items()]
    sized = size_rows(samples, log.header.method.prompt_tokens, judgement, now)
    return Report(log.header, judgement, _mark_best(rows, judgement), samples, now, sized,
                  slopes(sized))  # fmt: skip


def _row(spec: PairSpec, samples: list[Sample], judgement: Judgement, now: float) -> Row:
    score = compute_score(spec.pair, samples, judgement.window_params(spec.model), now)
    return row_of(spec, score, len(samples), judgement)


def row_of(spec: PairSpec, score: Score, requests: int, judgement: Judgement) -> Row:
    """A report row from a pair's score: its verdict band and cold-start count."""
    bands = judgement.for_model(spec.model)
    verdict = cv_band(score.cv, bands.cv_tight, bands.cv_variable) if score.is_proven else UNPROVEN
    cold = round((score.cold_share or 0.0) * score.n)
    return Row(spec, score, requests, cold, verdict)


# -- the same table from a running proxy's routing windows (GET /admin/report) ---------------


@dataclass(frozen=True, slots=True)
class LiveReport:
    """The report's rows for the scores a proxy routes on now: each pair's routing window
    (the policy's count and age limits), not a bench run."""

    replica: str
    judgement: Judgement
    rows: list[Row]
    generated: float
    # each pair's last 5 min / 30 min / day (learning.published), when computed
    published: Mapping[PairSpec, Sequence[Span]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.spec.model for r in self.rows))

    def best(self, model: str) -> Row | None:
        return next((r for r in self.rows if r.spec.model == model and r.is_best), None)


def build_live_report(
    scores: Sequence[tuple[PairSpec, Score]], judgement: Judgement, replica: str, now: float,
    published: Mapping[PairSpec, Sequence[Span]] | None = None,
) -> LiveReport:  # fmt: skip
    """Rows from the scoreboard's scores as they are (no figure is recomputed here): the
    same rows, verdicts and best pair as a bench report of the same samples; `published`:
    each pair's figures over the last 5 min, 30 min and day, shown in their own section."""
    rows = [row_of(spec, score, score.n_attempts, judgement) for spec, score in scores]
    return LiveReport(replica, judgement, _mark_best(rows, judgement), now, published or {})


def live_markdown(report: LiveReport) -> str:
    lines = [
        "# TTFT report (live routing windows)",
        "",
        f"Replica {report.replica}, generated {_utc(report.generated)}, from the samples "
        "each pair's routing window holds now (passive and probe; the policy's count and "
        "age limits).",
        "",
        *_table_lines(report.rows),
        "",
        *_notes(report, report.judgement),
        *_published_lines(report.published),
    ]
    return "\n".join(lines) + "\n"


def live_json(report: LiveReport) -> bytes:
    document = {
        "replica": report.replica,
        "generated": report.generated,
        "judgement": report.judgement.to_dict(),
        "best": {m: row.spec.provider for m in report.models if (row := report.best(m))},
        "rows": [row.to_dict() for row in report.rows],
        "published": [
            {"model": spec.model, "provider": spec.provider,
             **{span.name: span.to_dict() for span in spans}}
            for spec, spans in report.published.items()
        ],
    }  # fmt: skip
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


PUBLISHED_COLUMNS = ("model", "provider", "span", "attempts", "uptime", "TTFT p50", "p75",
                     "p90", "p99", "tok/s p50", "p75", "p90", "p99")  # fmt: skip


def _published_lines(published: Mapping[PairSpec, Sequence[Span]]) -> list[str]:
    """The section of OpenRouter's endpoint figures: one line per pair and span."""
    if not published:
        return []
    lines = [
        "", "## Last 5 minutes, 30 minutes and day", "",
        "Per pair as OpenRouter publishes per endpoint: TTFT (s) and decode throughput "
        "(tokens/s after the first token; p90 is the rate 90% of the answers reached) at "
        "p50/p75/p90/p99, uptime (attempts without a provider error). From the samples the "
        "store keeps of each pair (its count limit may cut the day short).", "",
        "| " + " | ".join(PUBLISHED_COLUMNS) + " |",
        "|" + "|".join("---" if c in _LEFT else "---:" for c in PUBLISHED_COLUMNS) + "|",
    ]  # fmt: skip
    for spec, spans in published.items():
        for span in spans:
            latency, rates = span.latency or {}, span.throughput or {}
            cells = [
                spec.model, spec.provider, span.name, str(span.n_attempts),
                "-" if span.uptime is None else f"{span.uptime:.1f}%",
                *(format_seconds(latency.get(p), "") for p in PERCENTILES),
                *(_tokens(rates.get(p)) for p in PERCENTILES),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def objective_of(score: Score, objective: str) -> float | None:
    """The routing objective's figure of a score (policy `objective`)."""
    value: float | None = getattr(score, OBJECTIVES[objective])
    return value


def _mark_best(rows: list[Row], judgement: Judgement) -> list[Row]:
    """Per model, the lowest routing objective (the policy's, as routing uses it) among
    proven pairs within the error-rate limit; the median breaks ties."""
    best: dict[str, tuple[tuple[float, float], Row]] = {}
    for row in rows:
        s = row.score
        value = objective_of(s, judgement.for_model(row.spec.model).objective)
        if not s.is_proven or value is None or s.error_rate > judgement.max_error_rate:
            continue
        key = (value, s.median or 0.0)
        current = best.get(row.spec.model)
        if current is None or key < current[0]:
            best[row.spec.model] = (key, row)
    chosen = {id(r) for _, r in best.values()}
    return [
        Row(r.spec, r.score, r.requests, r.cold_count, r.verdict, id(r) in chosen) for r in rows
    ]


# -- renderings -----------------------------------------------------------------------------

COLUMNS = ("model", "provider", "n", "errors", "median", "p90", "p95", "p99", "mean", "std",
           "CV%", "std/median%", "p95/p50", "cold", "tok/s", "verdict", "best")  # fmt: skip
# What a terminal too narrow for every column still shows, under shorter headings.
COMPACT = ("model", "provider", "n", "errors", "median", "p95", "CV%", "verdict", "best")
_SHORT = {"errors": "err", "median": "p50", "best": ""}
_LEFT = ("model", "provider", "verdict", "best")


def _cells(row: Row, unit: str = " s") -> dict[str, str]:
    s = row.score
    times = ("median", "p90", "p95", "p99", "mean", "std")
    values = (s.median, s.p90, s.p95, s.p99, s.mean, s.std)
    return {
        "model": row.spec.model,
        "provider": row.spec.provider,
        "n": str(s.n),
        "errors": str(s.n_errors),
        **{name: format_seconds(v, unit) for name, v in zip(times, values, strict=True)},
        "CV%": _pct(s.cv),
        "std/median%": _pct(s.std_over_median),
        "p95/p50": "-" if s.tail_ratio is None else f"{s.tail_ratio:.1f}",
        "cold": str(row.cold_count),
        "tok/s": _tokens(_rate(s, "p50")),
        "verdict": row.verdict,
        "best": "best" if row.is_best else "",
    }


def format_seconds(value: float | None, unit: str = " s") -> str:
    """Three significant digits, trailing zeros kept (0.390 s, 6.30 s, 40.1 s, 123 s)."""
    if value is None:
        return "-"
    return f"{value:.0f}{unit}" if value >= 100 else f"{value:#.3g}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def rich_table(report: Report, *, compact: bool = False) -> Table:
    """The report for a terminal (times in seconds, without the unit to save width);
    `compact` keeps the columns that fit in 80."""
    columns = COMPACT if compact else COLUMNS
    table = Table(
        title="TTFT in seconds per model and provider (counted samples; warm-ups discarded)",
        box=box.SIMPLE_HEAD,
        pad_edge=not compact,
        collapse_padding=compact,
    )
    for name in columns:
        heading = _SHORT.get(name, name) if compact else name
        table.add_column(heading, justify="left" if name in _LEFT else "right", no_wrap=True)
    styles = {"tight": "green", "variable": "yellow", "cold-start-prone": "red"}
    for i, row in enumerate(report.rows):
        cells = _cells(row, unit="")
        cells["verdict"] = f"[{styles.get(row.verdict, 'dim')}]{row.verdict}[/]"
        star = "★" if compact else "★ best"
        cells["best"] = f"[bold green]{star}[/]" if row.is_best else ""
        following = report.rows[i + 1].spec.model if i + 1 < len(report.rows) else None
        table.add_row(
            *(cells[c] for c in columns), end_section=following not in (None, row.spec.model)
        )
    return table


def markdown(report: Report, pictures: Sequence[Path] = ()) -> str:
    m, p, j = report.header.method, report.header.pacing, report.judgement
    lines = [
        "# TTFT benchmark",
        "",
        f"Run started {_utc(report.header.started)}, report generated {_utc(report.generated)}.",
        f"Method: {m.requests} counted requests per pair after {m.warmup} discarded "
        f"warm-ups, streamed, temperature {m.temperature:g}, max_tokens {m.max_tokens}, "
        f"concurrency {m.concurrency} per pair, pairs interleaved round-robin, "
        f"{p.spacing_s:g} s apart (jitter ±{100 * p.jitter:.0f}%)"
        + (f", spread over {p.duration_s:g} s." if p.duration_s else "."),
        f"Prompt: `{m.prompt}`"
        + (
            f", padded to {_sizes(m.prompt_tokens)} tokens, its text different in every request"
            if m.prompt_tokens
            else ""
        ),
        "",
        *_table_lines(report.rows),
        "",
        *_notes(report, j),
        *_size_lines(report),
    ]
    if pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{pic.stem}]({pic.name})" for pic in pictures]
    return "\n".join(lines) + "\n"


def _sizes(sizes: Sequence[int]) -> str:
    return ", ".join(f"{n:,}" for n in sizes)


SIZE_COLUMNS = ("model", "provider", "prompt tokens", "n", "errors", "median", "p95", "tok/s")


def _size_lines(report: Report) -> list[str]:
    """With --prompt-tokens: TTFT per pair and size, and each pair's slope."""
    if not report.by_size:
        return []
    lines = [
        "", "## TTFT by prompt size", "",
        "| " + " | ".join(SIZE_COLUMNS) + " |",
        "|" + "|".join("---" if c in _LEFT else "---:" for c in SIZE_COLUMNS) + "|",
    ]  # fmt: skip
    for row in report.by_size:
        s, t = row.score, row.score.throughput
        cells = (row.spec.model, row.spec.provider, f"{row.prompt_tokens:,}", str(s.n),
                 str(s.n_errors), format_seconds(s.median), format_seconds(s.p95),
                 _tokens(t.p50 if t else None))  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if report.slopes:
        lines += ["", "Slope per pair: the least-squares line through its median TTFT at each "
                  "size (the main table above mixes the sizes).", "",
                  "| model | provider | s per 1k prompt tokens | TTFT at 0 tokens |",
                  "|---|---|---:|---:|"]  # fmt: skip
        lines += [f"| {x.spec.model} | {x.spec.provider} | {x.s_per_1k:.4f} | "
                  f"{format_seconds(x.at_zero_s)} |" for x in report.slopes]  # fmt: skip
    return lines


def _table_lines(rows: Sequence[Row]) -> list[str]:
    return [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(_md_align(c) for c in COLUMNS) + "|",
        *("| " + " | ".join(_md_cells(row)) + " |" for row in rows),
    ]


def _md_align(column: str) -> str:
    return "---" if column in _LEFT else "---:"


def _md_cells(row: Row) -> list[str]:
    cells = _cells(row)
    cells["best"] = "**best**" if row.is_best else ""
    return [cells[c] for c in COLUMNS]


OBJECTIVE_WORDS = {"tail_mean": "tail mean (mean of the slowest 5%)", "p50": "median"}


def _objectives(report: Report | LiveReport, j: Judgement) -> str:
    names = dict.fromkeys(j.for_model(m).objective for m in report.models)
    return " / ".join(OBJECTIVE_WORDS.get(n, n) for n in names)


def _notes(report: Report | LiveReport, j: Judgement) -> list[str]:
    bands = {(b.cv_tight, b.cv_variable) for b in (j.for_model(m) for m in report.models)}
    band_text = "; ".join(f"tight below {100 * t:.0f}%, variable below {100 * v:.0f}%, "
                          "cold-start-prone above" for t, v in sorted(bands))  # fmt: skip
    notes = [
        "n: latency observations (first tokens, plus timeouts counted at their timeout); "
        "errors: failed requests (timeouts included). Times in seconds.",
        "CV% is the standard coefficient of variation, std/mean (sample std). std/median% "
        "and p95/p50 are robust measures of the same spread, shown beside it; published "
        "CVs above ~866% (75 samples) can only be std/median.",
        "cold: samples above max(factor x median, floor) of the pair, per the policy's "
        "cold_start settings.",
        "tok/s: the median decode throughput, output tokens per second after the first "
        "token (usage when the stream reports it, else output chunks counted).",
        f"verdict: the policy's CV bands ({band_text}); `unproven` below {j.min_samples} samples.",
        f"best: lowest {_objectives(report, j)} of the model (the routing objective) among "
        f"proven pairs with at most {100 * j.max_error_rate:.0f}% errors.",
    ]
    if isinstance(report, Report) and report.header.method.requests < METHOD_REQUESTS:
        notes.append(
            f"Warning: {report.header.method.requests} requests per pair is below the "
            f"method's {METHOD_REQUESTS}; p95 and CV are less certain."
        )
    return [f"- {n}" for n in notes]


def csv_text(report: Report | LiveReport) -> str:
    buffer = io.StringIO()
    rows = [row.to_dict() for row in report.rows]
    if not rows:
        return ""
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def json_bytes(report: Report) -> bytes:
    h = report.header
    document = {
        "started": h.started,
        "generated": report.generated,
        "method": h.method.to_dict(),
        "pacing": h.pacing.to_dict(),
        "judgement": report.judgement.to_dict(),
        "best": {m: row.spec.provider for m in report.models if (row := report.best(m))},
        "rows": [row.to_dict() for row in report.rows],
        "by_prompt_size": [row.to_dict() for row in report.by_size],
        "slopes": [slope.to_dict() for slope in report.slopes],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def write_report(report: Report, out: Path, pictures: Sequence[Path] = ()) -> list[Path]:
    """report.md, report.csv and report.json in `out`, each replaced whole."""
    files = {
        out / "report.md": markdown(report, pictures).encode(),
        out / "report.csv": csv_text(report).encode(),
        out / "report.json": json_bytes(report),
    }
    for path, data in files.items():
        atomic_write(path, data)
    return list(files)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
