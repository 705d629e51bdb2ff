"""`ttft-router bench | report | import`: their arguments, their runs and their rich output.

It parses and prints; measuring, reporting and importing live in the other bench modules.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.method.plan import BenchError, Pacing, judgement_from_policies, parse_duration
from proxy.settings.config import Config
from proxy.settings.policy import PolicyHolder, load_checked
from proxy.telemetry.logs import configure_logging

if TYPE_CHECKING:
    from proxy.method.job import BenchOptions, Job
    from proxy.method.progress import LiveProgress, PlainProgress
    from proxy.method.report import Report
    from proxy.method.samplefile import RunLog


def cmd_bench(args: argparse.Namespace) -> int:
    configure_logging("warning", json_lines=False)
    out = Path(args.out)
    try:
        return asyncio.run(bench_async(args))
    except KeyboardInterrupt:
        print(f"\nttft-router bench: interrupted; every finished request is in "
              f"{out / 'samples.jsonl'}; run the same command again to resume",
              file=sys.stderr)  # fmt: skip
        return 130


async def bench_async(args: argparse.Namespace) -> int:
    """`ttft-router bench` in the caller's event loop (the CLI wraps it in asyncio.run)."""
    from proxy.app import build_upstream
    from proxy.method.job import execute, prepare, publish, remaining
    from proxy.method.report import build_report
    from proxy.upstream.openai_compat import make_session

    config, policies = load_checked(args.config)
    job = prepare(bench_options(args), config, policies.current)
    if job.existing is not None:
        print(f"resuming {job.samples_path}: {len(job.existing.records)} requests already "
              f"in, {remaining(job)} to go", file=sys.stderr)  # fmt: skip
    session = make_session()
    upstreams = {name: build_upstream(name, config.providers[name], session)
                 for name in job.providers}  # fmt: skip
    try:
        with _progress(job) as progress:
            run = await execute(job, upstreams, progress, f"bench-{socket.gethostname()}")
    finally:
        for upstream in upstreams.values():
            await upstream.close()
        await session.close()
    report = build_report(run, job.judgement)
    _show(report, publish(report, job.out, plots=not args.no_plots))
    if args.import_samples:
        await import_async(run, config, policies)
    return 0


def bench_options(args: argparse.Namespace) -> BenchOptions:
    from proxy.method.job import BenchOptions
    from proxy.method.plan import DEFAULT_PROMPT

    prompt = DEFAULT_PROMPT
    if args.prompt_file:
        try:
            prompt = Path(args.prompt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BenchError(f"--prompt-file {args.prompt_file}: cannot read: {exc}") from None
        if not prompt:
            raise BenchError(f"--prompt-file {args.prompt_file}: the file is empty")
    pacing = Pacing(
        spacing_s=args.spacing, jitter=args.jitter, duration_s=args.duration,
        first_token_s=args.timeout,
    )  # fmt: skip
    return BenchOptions(
        out=Path(args.out), models=args.model or (), providers=args.provider or (),
        requests=args.requests, warmup=args.warmup, concurrency=args.concurrency,
        prompt=prompt, max_tokens=args.max_tokens, pacing=pacing,
        min_samples=args.min_samples, max_error_rate=args.max_error_rate,
        prompt_tokens=args.prompt_tokens or (),
    )  # fmt: skip


def _progress(job: Job) -> LiveProgress | PlainProgress:
    from proxy.method.progress import LiveProgress, PlainProgress, Tally

    tally = Tally(job.method, job.judgement)
    for record in job.existing.records if job.existing else ():
        tally.add(record)
    return LiveProgress(tally) if sys.stderr.isatty() else PlainProgress(tally)


def _show(report: Report, files: Sequence[Path]) -> None:
    from rich.console import Console

    from proxy.method.report import format_seconds, objective_of, rich_table

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = rich_table(report)
    unbounded = console.options.update_width(10_000)
    if console.measure(table, options=unbounded).maximum > console.width:
        table = rich_table(report, compact=True)
        table.caption = "(a narrow terminal: every column is in report.md)"
    console.print(table)
    for model in report.models:
        best = report.best(model)
        objective = report.judgement.for_model(model).objective
        choice = (f"{best.spec.provider} ({objective} "
                  f"{format_seconds(objective_of(best.score, objective))}, "
                  f"p95 {format_seconds(best.score.p95)})" if best
                  else "none (no proven pair within the error limit)")  # fmt: skip
        console.print(f"best for {model}: {choice}")
    for slope in report.slopes:
        console.print(f"slope of {slope.spec.pair}: {slope.s_per_1k:.4f} s per 1k prompt tokens "
                      f"(TTFT at 0 tokens {format_seconds(slope.at_zero_s)})")  # fmt: skip
    wanted = report.header.method.counted_per_pair
    incomplete = [r for r in report.rows if r.requests < wanted]
    if incomplete:
        console.print(f"[yellow]incomplete: {len(incomplete)} pair(s) have fewer than "
                      f"{wanted} counted requests; rerun bench to resume[/]")  # fmt: skip
    if files:
        console.print(f"wrote {', '.join(p.name for p in files)} in {files[0].parent}")


def cmd_report(args: argparse.Namespace) -> int:
    from proxy.method.job import publish
    from proxy.method.report import build_report
    from proxy.method.samplefile import read_run

    configure_logging("warning", json_lines=False)
    path = Path(args.file)
    run = read_run(path)
    judgement = None
    if args.config:
        _, policies = load_checked(args.config)
        recorded = run.header.judgement
        models = list(dict.fromkeys(p.model for p in run.header.method.pairs))
        judgement = judgement_from_policies(
            policies.current, models, recorded.min_samples, recorded.max_error_rate
        )
    if run.has_torn_tail:
        print(f"note: {path} ends in a torn line (an interrupted write); it is ignored",
              file=sys.stderr)  # fmt: skip
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(run, judgement)
    _show(report, publish(report, out, plots=not args.no_plots))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from proxy.method.samplefile import read_run

    config, policies = load_checked(args.config)
    run = read_run(Path(args.file))
    asyncio.run(import_async(run, config, policies))
    return 0


async def import_async(run: RunLog, config: Config, policies: PolicyHolder) -> None:
    """Counted samples of `run` into the configured store (memory or redis)."""
    from proxy.app import build_store
    from proxy.learning.store.base import StoreUnavailable
    from proxy.method.importer import import_samples, plan_import

    plan = plan_import(run, config)
    for pair, why in plan.skipped.items():
        print(f"import: skipped {pair}: {why}", file=sys.stderr)
    if not plan.samples:
        raise BenchError(f"{run.path}: no counted samples of a pair this config serves")
    store = build_store(config, f"bench-import-{socket.gethostname()}")
    try:
        await store.start()
        count = await import_samples(plan.samples, store)
    except StoreUnavailable as exc:
        raise BenchError(f"cannot import into the {config.store.kind} store: {exc}") from None
    finally:
        await store.close()
    pairs = len({s.pair for s in plan.samples})
    print(f"imported {count} samples ({pairs} pairs) into the {config.store.kind} store")
    newest = max(s.timestamp for s in plan.samples)
    for model in dict.fromkeys(s.model for s in plan.samples):
        max_age_s = policies.current.for_model(model).window.max_age_s
        if time.time() - newest > max_age_s:
            print(f"note: these samples are older than the routing window of {model} "
                  f"({max_age_s:g} s): the proxy will not count them", file=sys.stderr)  # fmt: skip
    if config.store.kind == "memory":
        print("note: the memory store lives in this process only; import into redis to "
              "share the samples with running proxies", file=sys.stderr)  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _prompt_sizes(text: str) -> tuple[int, ...]:
    from proxy.method.prompts import parse_sizes

    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_bench_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure TTFT per model x provider with the published method",
        description="Measure TTFT per model x provider: streamed, temperature 0, a fixed "
        "short prompt, warm-ups discarded, pairs interleaved round-robin, every sample "
        "appended to OUT/samples.jsonl as it arrives (rerun the same command to resume).",
    )
    add = bench.add_argument
    add("--config", required=True, metavar="PATH",
        help="config.yaml (providers, models, policies)")  # fmt: skip
    add("--model", nargs="+", action="extend", metavar="M", help="models to measure (default: all)")
    add("--provider", nargs="+", action="extend", metavar="P",
        help="providers to measure (default: all serving the models)")  # fmt: skip
    add(
        "--requests",
        type=_positive_int,
        default=75,
        metavar="N",
        help="counted requests per pair (75)",
    )
    add(
        "--warmup",
        type=_non_negative_int,
        default=3,
        metavar="N",
        help="discarded warm-ups per pair (3)",
    )
    add("--spacing", type=_seconds, default=3.0, metavar="S", help="seconds between rounds (3)")
    add(
        "--jitter",
        type=_share,
        default=0.25,
        metavar="F",
        help="spacing varies by ±this share (0.25)",
    )
    add(
        "--duration",
        type=_duration,
        metavar="D",
        help="spread the run over e.g. 3h (peak and off-peak)",
    )
    add(
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="N",
        help="requests in flight per pair (1)",
    )
    add("--prompt-file", metavar="PATH", help="the prompt to send (default: a fixed short prompt)")
    add("--prompt-tokens", type=_prompt_sizes, metavar="N[,M...]",
        help="pad the prompt to about N tokens (several: each in turn, --requests at each, and "
        "the report gives each pair's slope); its text differs in every request")  # fmt: skip
    add(
        "--max-tokens",
        type=_positive_int,
        default=16,
        metavar="N",
        help="max_tokens of each request (16)",
    )
    add("--timeout", type=_seconds, metavar="S", help="seconds to wait for a first token "
        "(default: each provider's timeouts.first_token_s)")  # fmt: skip
    add("--min-samples", type=_positive_int, metavar="N",
        help="samples a pair needs for a verdict (default: 75, or --requests if less)")  # fmt: skip
    add("--max-error-rate", type=_share, default=0.10, metavar="F",
        help="pairs with more errors are not named best (0.10)")  # fmt: skip
    add("--out", default="bench-results", metavar="DIR",
        help="directory for samples, report, pictures (bench-results)")  # fmt: skip
    add("--no-plots", action="store_true", help="skip the PNG pictures")
    add("--import", dest="import_samples", action="store_true",
        help="then load the samples into the configured store (source=bench)")  # fmt: skip
    bench.set_defaults(func=cmd_bench)

    report = sub.add_parser("report", help="re-render a bench report from its samples file")
    report.add_argument("file", help="a bench samples file (samples.jsonl)")
    report.add_argument("--out", help="directory for the report (default: the file's)")
    report.add_argument("--config", help="take CV bands and cold-start rule from this config's "
                        "policies (default: those recorded in the file)")  # fmt: skip
    report.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    report.set_defaults(func=cmd_report)

    load = sub.add_parser("import", help="load a bench samples file into the configured store")
    load.add_argument("file", help="a bench samples file (samples.jsonl)")
    load.add_argument("--config", required=True, help="path to config.yaml (its store)")
    load.set_defaults(func=cmd_import)
