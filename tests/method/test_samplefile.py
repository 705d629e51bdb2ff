"""The samples file: torn last lines are survivable, anything else malformed is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.method.plan import BenchError
from proxy.method.samplefile import SampleWriter, read_run
from tests.method.conftest import synthetic_run


def test_a_torn_last_line_is_ignored_and_cut_off_on_resume(tmp_path: Path) -> None:
    path = synthetic_run(tmp_path / "s.jsonl", {("m", "p"): [0.2, 0.3]})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"kind":"sample","phase":"coun')
    run = read_run(path)
    assert run.has_torn_tail and len(run.records) == 3
    SampleWriter.resume(run).close()
    assert path.read_bytes() == whole


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda lines: [b"{}", *lines[1:]], "s.jsonl:1: not a bench samples file"),
        (lambda lines: [*lines[:2], b"not json", *lines[2:]], "s.jsonl:3: malformed sample"),
        (lambda lines: [*lines, lines[2]], "s.jsonl:5: duplicate counted sample #0 of m@p"),
        (
            lambda lines: [*lines, lines[2].replace(b'"ttft_s":0.2', b'"ttft_s":-1')],
            "s.jsonl:5: malformed sample line: expected a finite non-negative",
        ),
        (
            lambda lines: [*lines, lines[2].replace(b'"provider":"p"', b'"provider":"x"')],
            "s.jsonl:5: pair m@x is not in the header",
        ),
        (lambda lines: [], "empty samples file"),
    ],
)
def test_a_malformed_file_is_refused_with_file_line_and_reason(
    tmp_path: Path,
    mangle,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    path = synthetic_run(tmp_path / "s.jsonl", {("m", "p"): [0.2, 0.3]})
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"".join(line + b"\n" for line in mangle(lines)))
    with pytest.raises(BenchError, match=message.replace("#", r"\#")):
        read_run(path)


def test_report_of_a_malformed_file_is_one_line_and_writes_nothing(
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text("garbage\n")
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s.jsonl:1: not a bench samples file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_a_run_killed_before_its_header_was_whole_starts_afresh(tmp_path: Path) -> None:
    path = synthetic_run(tmp_path / "s.jsonl", {("m", "p"): [0.2]})
    header = read_run(path).header
    path.write_bytes(b'{"kind":"header","vers')
    SampleWriter.create(path, header).close()
    assert read_run(path).records == []


def test_two_runs_never_append_to_the_same_file(tmp_path: Path) -> None:
    path = synthetic_run(tmp_path / "s.jsonl", {("m", "p"): [0.2]})
    first = SampleWriter.resume(read_run(path))
    try:
        with pytest.raises(BenchError, match="another bench run is writing this file"):
            SampleWriter.resume(read_run(path))
    finally:
        first.close()
    SampleWriter.resume(read_run(path)).close()
