"""Pictures of a bench report: per model, TTFT distribution and TTFT over time per provider.

matplotlib is an optional extra (`ttft-router[plots]`), imported inside `write_plots` only.
Figures are built on `matplotlib.figure.Figure` and saved through the Agg renderer, never
through pyplot, so no GUI backend and no global figure state are involved. Each PNG is
written to a temp file and renamed. Figures shown come from the report; nothing is
computed here beyond placing points.
"""

from __future__ import annotations

import os
import random
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.core.domain import Sample
from proxy.core.errors import TtftRouterError
from proxy.method.report import Report, Row, format_seconds

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure


class PlotsUnavailable(TtftRouterError):
    """matplotlib is not installed."""


def write_plots(report: Report, out: Path) -> list[Path]:
    """Two PNGs per model in `out`; returns their paths. Raises PlotsUnavailable."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailable(
            "pictures need matplotlib: pip install 'ttft-router[plots]'"
        ) from None
    paths = []
    for model in report.models:
        rows = [r for r in report.rows if r.spec.model == model]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
        for name, draw in (("distribution", _distribution), ("over-time", _over_time)):
            fig = Figure(figsize=(11, 1.6 + 1.1 * len(rows)) if name == "distribution"
                         else (11, 4.5), layout="constrained")  # fmt: skip
            draw(fig.subplots(), model, rows, report)
            path = out / f"{slug}-ttft-{name}.png"
            _save(fig, path)
            paths.append(path)
    return paths


def _save(fig: Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _label(row: Row) -> str:
    star = " ★" if row.is_best else ""
    return f"{row.spec.provider}{star}"


def _distribution(ax: Axes, model: str, rows: list[Row], report: Report) -> None:
    """One strip of points per provider on a log axis: warm and cold clusters stand apart."""
    rng = random.Random(0)
    for i, row in enumerate(rows):
        samples = report.samples[row.spec]
        ttft = [s.ttft_s for s in samples if s.ttft_s is not None]
        y = [i + rng.uniform(-0.28, 0.28) for _ in ttft]
        ax.scatter(ttft, y, s=14, alpha=0.6, color=_colour(i), edgecolors="none")
        censored = [s.censored_at_s for s in samples if s.censored_at_s is not None]
        if censored:
            ax.scatter(censored, [i] * len(censored), marker=">", s=40, color="black",
                       label="timeout (TTFT > x)" if i == 0 else None)  # fmt: skip
        s = row.score
        for value, style in ((s.median, "-"), (s.p95, "--")):
            if value is not None:
                ax.plot([value, value], [i - 0.4, i + 0.4], style, color="black", lw=1.4)
        ax.annotate(_summary(row), (1.005, i), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    _seconds_axis(ax.xaxis)
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("TTFT (s, log scale)   — solid: median, dashed: p95")
    ax.set_title(f"{model}: TTFT per provider ({_method_text(report)})", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)


def _seconds_axis(axis: Axis) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k labelled in plain seconds (0.02, 0.5, 6)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _summary(row: Row) -> str:
    s = row.score
    if s.median is None or s.p95 is None:
        return f"n={s.n}, errors {s.n_errors}"
    cv = "-" if s.cv is None else f"{100 * s.cv:.0f}%"
    return (
        f"n={s.n}  p50 {format_seconds(s.median)}  p95 {format_seconds(s.p95)}\n"
        f"CV {cv}  cold {row.cold_count}  errors {s.n_errors}  {row.verdict}"
    )


def _over_time(ax: Axes, model: str, rows: list[Row], report: Report) -> None:
    """TTFT of every counted request against wall-clock time; errors as crosses below."""
    lowest = min((s.ttft_s for r in rows for s in report.samples[r.spec] if s.ttft_s), default=0.01)
    for i, row in enumerate(rows):
        samples = report.samples[row.spec]
        ok = [(_when(s), s.ttft_s) for s in samples if s.ttft_s is not None]
        ax.plot([t for t, _ in ok], [v for _, v in ok], "o-", ms=3.5, lw=0.6, alpha=0.8,
                color=_colour(i), label=_label(row))  # fmt: skip
        failed = [_when(s) for s in samples if s.ttft_s is None]
        if failed:
            ax.scatter(failed, [lowest * 0.6] * len(failed), marker="x", color=_colour(i), s=30)
    ax.xaxis_date()
    ax.set_yscale("log")
    _seconds_axis(ax.yaxis)
    ax.set_ylabel("TTFT (s, log scale)")
    ax.set_xlabel("local time   (× below the points: a request that failed or timed out)")
    ax.set_title(f"{model}: TTFT over time per provider", fontsize=10)
    ax.grid(which="both", alpha=0.25)
    ax.legend(loc="upper left", fontsize=8, ncols=min(len(rows), 4))
    for label in ax.get_xticklabels():
        label.set_rotation(20)
        label.set_horizontalalignment("right")


def _when(sample: Sample) -> float:
    """Matplotlib's date number of the sample's (local) wall-clock time."""
    from matplotlib.dates import date2num

    return float(date2num(datetime.fromtimestamp(sample.timestamp)))  # type: ignore[no-untyped-call]


def _method_text(report: Report) -> str:
    m = report.header.method
    return f"{m.counted_per_pair} counted requests per pair after {m.warmup} warm-ups"
