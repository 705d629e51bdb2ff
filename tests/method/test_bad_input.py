"""Bad input to `ttft-router bench`: one line naming what is wrong, exit 2, no file made."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from tests.method.conftest import synthetic_run, write_config


@pytest.fixture(autouse=True)
def _quiet_leftovers(capsys: pytest.CaptureFixture[str]) -> None:
    """Finalise what earlier tests of the session left for the garbage collector (an SDK
    client's aclose on a closed loop logs "Task exception was never retrieved" to stderr
    whenever it is collected), so stderr holds the bench's words alone."""
    gc.collect()
    gc.collect()
    capsys.readouterr()


def bench(config: Path, out: Path, *extra: str) -> list[str]:
    return ["bench", "--config", str(config), "--out", str(out), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope"], "unknown model 'nope' (configured: deepseek-v4-pro, kimi-k2.6)"),
        (["--provider", "provider-z"], "unknown provider 'provider-z' (configured: provider-a"),
        (["--prompt-file", "/nonexistent/prompt.txt"], "--prompt-file /nonexistent/prompt.txt"),
    ],
)
def test_unknown_choices_are_named(
    tmp_path: Path,
    capsys,
    extra: list[str],
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "out"
    assert main(bench(write_config(tmp_path), out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_a_provider_without_a_key_is_named(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["providers"]["provider-b"]["api_key"]
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(bench(config, out, "--model", "kimi-k2.6")) == 2
    err = capsys.readouterr().err.strip()
    assert "provider 'provider-b' has no api_key" in err and "\n" not in err
    assert not out.exists()


def test_a_resume_with_another_method_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    out.mkdir()
    existing = synthetic_run(out / "samples.jsonl", {("kimi-k2.6", "provider-a"): [0.3]})
    before = existing.read_bytes()
    assert main(bench(write_config(tmp_path), out, "--model", "kimi-k2.6")) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a run with another method" in err and "--requests 75 here, 1 there" in err
    assert existing.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["samples.jsonl"]


def test_an_invalid_duration_is_an_argument_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        main(bench(write_config(tmp_path), tmp_path / "out", "--duration", "3 days"))
    assert exit_.value.code == 2
    assert "invalid duration '3 days'" in capsys.readouterr().err
