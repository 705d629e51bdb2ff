"""A bench job from start to finish: check the input, run or resume, publish the report.

`prepare` checks everything (pairs, keys, the samples file already in `--out` and whether
this command may resume it) before a single file is created. `execute` runs what is
missing; `publish` writes the report files and the pictures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.method.plan import (
    METHOD_REQUESTS,
    BenchError,
    Judgement,
    Method,
    Pacing,
    judgement_from_policies,
    select_pairs,
)
from proxy.method.report import Report, write_report
from proxy.method.runner import Progress, Run, run_bench
from proxy.method.samplefile import RunLog, SampleWriter, new_header, read_run
from proxy.settings.config import Config
from proxy.settings.policy import PolicySet
from proxy.upstream.base import Upstream

log = logging.getLogger("ttft_router.bench")
SAMPLES_FILE = "samples.jsonl"


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """The flags of `ttft-router bench`, parsed."""

    out: Path
    models: Sequence[str] = ()
    providers: Sequence[str] = ()
    requests: int = 75
    warmup: int = 3
    concurrency: int = 1
    prompt: str = ""
    max_tokens: int = 16
    prompt_tokens: tuple[int, ...] = ()  # --prompt-tokens: sizes to pad the prompt to
    pacing: Pacing = field(default_factory=Pacing)
    min_samples: int | None = None  # None: the method's 75, or --requests when fewer
    max_error_rate: float = 0.10


@dataclass(frozen=True, slots=True)
class Job:
    out: Path
    method: Method
    pacing: Pacing
    judgement: Judgement
    first_token_s: Mapping[str, float]
    existing: RunLog | None

    @property
    def samples_path(self) -> Path:
        return self.out / SAMPLES_FILE

    @property
    def providers(self) -> list[str]:
        return list(dict.fromkeys(p.provider for p in self.method.pairs))


def prepare(options: BenchOptions, config: Config, policies: PolicySet) -> Job:
    """Check the input and the samples file in `out`. Creates nothing; raises BenchError."""
    pairs = select_pairs(config, options.models, options.providers)
    method = Method(
        pairs=pairs, requests=options.requests, warmup=options.warmup,
        concurrency=options.concurrency, prompt=options.prompt, max_tokens=options.max_tokens,
        prompt_tokens=options.prompt_tokens,
    )  # fmt: skip
    judgement = judgement_from_policies(
        policies,
        list(dict.fromkeys(p.model for p in pairs)),
        min_samples=options.min_samples or min(options.requests, METHOD_REQUESTS),
        max_error_rate=options.max_error_rate,
    )
    override = options.pacing.first_token_s
    first_token_s = {
        p.provider: override or config.providers[p.provider].timeouts.first_token_s for p in pairs
    }
    if options.out.exists() and not options.out.is_dir():
        raise BenchError(f"--out {options.out} exists and is not a directory")
    existing = _existing_run(options.out / SAMPLES_FILE, method)
    return Job(options.out, method, options.pacing, judgement, first_token_s, existing)


def _existing_run(path: Path, method: Method) -> RunLog | None:
    if not path.exists() or b"\n" not in path.read_bytes():
        return None  # nothing there, or a run killed before its header was whole
    run = read_run(path)
    differences = run.header.method.differences(method)
    if differences:
        raise BenchError(
            f"{path} holds a run with another method ({'; '.join(differences)}): "
            "rerun with that run's flags to resume it, or choose another --out"
        )
    return run


def remaining(job: Job) -> int:
    """Requests still to send."""
    total = len(job.method.pairs) * (job.method.warmup + job.method.counted_per_pair)
    return total - (len(job.existing.records) if job.existing else 0)


async def execute(
    job: Job, upstreams: Mapping[str, Upstream], progress: Progress, replica: str
) -> RunLog:
    """Run (or resume) the job to completion; every sample is on disk as it arrives."""
    job.out.mkdir(parents=True, exist_ok=True)
    if job.existing is None:
        header = new_header(job.method, job.pacing, job.judgement)
        writer = SampleWriter.create(job.samples_path, header)
        started, done = header.started, []
    else:
        writer = SampleWriter.resume(job.existing)
        started, done = job.existing.header.started, job.existing.records
    try:
        run = Run(
            method=job.method, pacing=job.pacing, started=started, upstreams=upstreams,
            first_token_s=job.first_token_s, writer=writer, replica=replica,
        )  # fmt: skip
        await run_bench(run, done, progress)
    finally:
        writer.close()
    return read_run(job.samples_path)


def publish(report: Report, out: Path, *, plots: bool) -> list[Path]:
    """Write the pictures (when asked and matplotlib is there) and the report files.

    Returns every file written. Pictures go first so that report.md can link them."""
    pictures: list[Path] = []
    if plots:
        from proxy.method.plots import PlotsUnavailable, write_plots

        try:
            pictures = write_plots(report, out)
        except PlotsUnavailable as exc:
            log.warning("no pictures: %s", exc)
    return [*write_report(report, out, pictures), *pictures]
