"""The report from a samples file: figures, verdict bands, the best pair, files, pictures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.method.job import publish
from proxy.method.plan import Judgement, ModelJudgement
from proxy.method.plots import write_plots
from proxy.method.report import build_report
from proxy.method.samplefile import read_run
from tests.method.conftest import is_png, synthetic_run

WARM = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98, 1.1, 0.9]


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    return synthetic_run(
        tmp_path / "samples.jsonl",
        {
            ("m", "steady"): WARM,
            ("m", "flaky"): [0.5] * 10 + [None] * 3,  # fastest, but 3 of 13 requests failed
            ("m", "short"): [0.1] * 5,  # fastest of all, but only 5 samples
            ("k", "cold"): [0.3] * 9 + [30.0],
            ("k", "warm"): [0.4, 0.5] * 5,
        },
    )


def test_figures_verdicts_and_best_come_from_counted_samples(run_file: Path) -> None:
    report = build_report(read_run(run_file))
    rows = {(r.spec.model, r.spec.provider): r for r in report.rows}
    steady = rows["m", "steady"]
    assert steady.score.n == 10 and steady.score.p99 == 1.1, "the 9 s warm-ups are left out"
    assert steady.verdict == "tight" and steady.is_best
    assert rows["m", "flaky"].score.n_errors == 3 and not rows["m", "flaky"].is_best
    assert rows["m", "short"].verdict == "unproven" and not rows["m", "short"].is_best
    cold = rows["k", "cold"]
    assert cold.verdict == "cold-start-prone" and cold.cold_count == 1
    assert cold.score.cv is not None and cold.score.std_over_median is not None
    assert cold.score.std_over_median > cold.score.cv > 1.0
    assert rows["k", "warm"].verdict == "tight" and rows["k", "warm"].is_best
    assert [report.best(m).spec.provider for m in report.models] == ["steady", "warm"]  # type: ignore[union-attr]


def test_best_is_named_by_the_routing_objective(run_file: Path) -> None:
    log = read_run(run_file)
    assert log.header.judgement.for_model("k").objective == "tail_mean"  # the default policy's
    # k: "cold" has the lower median (0.3 s vs 0.45 s), "warm" the lower tail (0.5 s vs 30 s)
    judgement = log.header.judgement
    by_median = replace(judgement, models={"k": replace(judgement.for_model("k"), objective="p50")})
    assert build_report(log).best("k").spec.provider == "warm"  # type: ignore[union-attr]
    assert build_report(log, by_median).best("k").spec.provider == "cold"  # type: ignore[union-attr]
    assert Judgement.from_dict(by_median.to_dict()) == by_median


def test_bands_follow_the_policy_thresholds(run_file: Path) -> None:
    strict = Judgement({"m": ModelJudgement(0.01, 0.02, 4.0, 2.0)}, min_samples=10)
    rows = build_report(read_run(run_file), strict).rows
    assert rows[0].verdict == "cold-start-prone"


def test_publish_writes_report_files_and_valid_pngs(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = build_report(read_run(run_file))
    files = publish(report, out, plots=True)
    names = sorted(p.name for p in files)
    assert names == sorted(
        ["report.md", "report.csv", "report.json", "m-ttft-distribution.png",
         "m-ttft-over-time.png", "k-ttft-distribution.png", "k-ttft-over-time.png"]
    )  # fmt: skip
    assert all(is_png(p) for p in files if p.suffix == ".png")
    assert "![m-ttft-distribution](m-ttft-distribution.png)" in (out / "report.md").read_text()
    document = json.loads((out / "report.json").read_text())
    assert document["best"] == {"m": "steady", "k": "warm"}
    assert not list(out.glob(".*tmp")), "no temp file left behind"


def test_model_names_with_slashes_make_flat_file_names(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "s.jsonl", {("org/model:v1", "p"): WARM})
    paths = write_plots(build_report(read_run(run)), tmp_path)
    assert [p.name for p in paths] == [
        "org_model_v1-ttft-distribution.png",
        "org_model_v1-ttft-over-time.png",
    ]


def test_report_command_rerenders_beside_the_file(run_file: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["report", str(run_file)]) == 0
    printed = capsys.readouterr().out
    assert "best for m: steady" in printed and "best for k: warm" in printed
    assert (run_file.parent / "report.md").exists()
    assert is_png(run_file.parent / "k-ttft-distribution.png")
