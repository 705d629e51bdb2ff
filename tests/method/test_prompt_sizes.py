"""`ttft-router bench --prompt-tokens`: the published method at the user's prompt sizes, on a
simulated market whose providers read prompts at different rates; the padded prompts; the
slope per pair (checked in-process on synthetic samples with a known line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proxy.cli import build_parser, main
from proxy.core.domain import Outcome, Sample, Source
from proxy.method.cli import bench_async
from proxy.method.plan import Judgement, Method, Pacing, PairSpec
from proxy.method.prompts import parse_sizes
from proxy.method.report import build_report, markdown
from proxy.method.samplefile import Record, SampleWriter, new_header, read_run
from proxy.simulator import Market, Scenario

# Every delay x0.05. "eager" answers a short prompt first but reads 2,000 prompt tokens a
# second; "wide" starts later and reads 50,000 a second: at 4,000 tokens it is far ahead.
TIME_SCALE = 0.05
EAGER = {"warm_ttft": {"median_s": 0.05, "sigma": 0.05}, "prefill_tokens_per_s": 2000}
WIDE = {"warm_ttft": {"median_s": 0.2, "sigma": 0.05}, "prefill_tokens_per_s": 50000}
SIZES = (200, 4000)
REQUESTS = 6


def market() -> Market:
    scenario = Scenario.model_validate({
        "time_scale": TIME_SCALE,
        "providers": {name: {"api_key": f"key-{name}", "models": {"org/M": behaviour}}
                      for name, behaviour in (("eager", EAGER), ("wide", WIDE))},
    })  # fmt: skip
    return Market(scenario.with_free_ports())


def write_config(directory: Path, m: Market) -> Path:
    config = {
        "auth": {"allow_unauthenticated": True},  # the bench serves nothing
        "providers": {name: {"kind": "openai", "base_url": m.base_url(name),
                             "api_key": m.api_key(name)} for name in ("eager", "wide")},
        "models": {"m": {"providers": {"eager": "org/M", "wide": "org/M"}}},
    }  # fmt: skip
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_bench_at_two_prompt_sizes_reports_each_pairs_slope(tmp_path: Path) -> None:
    async with market() as m:
        config, out = write_config(tmp_path, m), tmp_path / "out"
        args = build_parser().parse_args(
            ["bench", "--config", str(config), "--requests", str(REQUESTS), "--warmup", "2",
             "--spacing", "0", "--prompt-tokens", "200,4000", "--no-plots", "--out", str(out)]
        )  # fmt: skip
        assert await bench_async(args) == 0

    report = json.loads((out / "report.json").read_text())
    assert report["method"]["prompt_tokens"] == list(SIZES)
    rows = {(r["provider"], r["prompt_tokens"]): r for r in report["by_prompt_size"]}
    assert set(rows) == {(p, n) for p in ("eager", "wide") for n in SIZES}
    assert all(r["n"] == REQUESTS and r["errors"] == 0 for r in rows.values())
    assert {r["provider"]: r["n"] for r in report["rows"]} == {"eager": 12, "wide": 12}
    # who is faster depends on the size: eager at 200 tokens, wide at 4,000
    assert rows["eager", 200]["median_s"] < rows["wide", 200]["median_s"]
    assert rows["wide", 4000]["median_s"] < rows["eager", 4000]["median_s"]
    slopes = {s["provider"]: s for s in report["slopes"]}
    # 0.5 s vs 0.02 s per 1k tokens, x0.05: the order and the gap, never the exact figure
    assert slopes["eager"]["s_per_1k_prompt_tokens"] > 5 * max(
        slopes["wide"]["s_per_1k_prompt_tokens"], 0.001)  # fmt: skip
    md = (out / "report.md").read_text()
    assert "## TTFT by prompt size" in md and "| m | eager | 4,000 |" in md
    assert "padded to 200, 4,000 tokens" in md

    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()[1:]]
    counted = [x for x in lines if x["phase"] == "counted"]
    assert sorted({x["prompt_tokens"] for x in counted}) == list(SIZES)
    assert all(x["output_tokens"] == 16 and x["decode_s"] > 0 for x in counted)  # tallied too
    assert {x["source"] for x in lines} == {"bench"}


def test_padded_prompts_are_about_the_size_asked_and_never_repeat() -> None:
    spec = PairSpec("m", "p", "org/M")
    method = Method((spec,), requests=3, warmup=1, concurrency=1, prompt="Reply: ready.",
                    max_tokens=4, prompt_tokens=(500, 3000))  # fmt: skip
    texts = [json.loads(method.body(spec, phase, i))["messages"][0]["content"]
             for phase in ("warmup", "counted") for i in range(4)]  # fmt: skip
    assert len(set(texts)) == len(texts)  # no two requests share their text
    assert len({t.split()[0] for t in texts}) == len(texts)  # nor their first word
    assert all(t.endswith("Reply: ready.") for t in texts)
    assert [len(t.split()) for t in texts[4:]] == [500, 3000, 500, 3000]  # sizes in turn
    assert method.body(spec, "counted", 1) == method.body(spec, "counted", 1)  # resumable
    assert method.counted_per_pair == 6 and method.size_of(3) == 3000
    plain = Method((spec,), requests=3, warmup=1, concurrency=1, prompt="hi", max_tokens=4)
    assert plain.body(spec, "counted", 0) == plain.body(spec, "warmup", 5)  # as before
    assert Method.from_dict(method.to_dict()) == method
    old = plain.to_dict()
    del old["prompt_tokens"]  # a samples file from before the flag
    assert Method.from_dict(old) == plain
    assert "--prompt-tokens 500,3000 here, (none) there" in plain.differences(method)


def test_the_slope_recovers_a_known_line_from_synthetic_samples(tmp_path: Path) -> None:
    """Medians at three sizes on TTFT = 0.3 s + 0.8 s per 1k tokens (a cold start at one
    size does not tilt it), and 0.1 + 0.05 per 1k for the other pair."""
    specs = (PairSpec("m", "slow", "u"), PairSpec("m", "fast", "u"))
    method = Method(specs, requests=9, warmup=0, concurrency=1, prompt="hi", max_tokens=4,
                    prompt_tokens=(1000, 8000, 16000))  # fmt: skip
    header = new_header(method, Pacing(spacing_s=0.0), Judgement({}, min_samples=5))
    path = tmp_path / "samples.jsonl"
    writer = SampleWriter.create(path, header)
    lines = {"slow": (0.3, 0.8e-3), "fast": (0.1, 0.05e-3)}  # base s, s per token
    t = header.started
    for spec in specs:
        base, per_token = lines[spec.provider]
        for i in range(method.counted_per_pair):
            size = method.size_of(i)
            assert size is not None
            ttft = base + per_token * size + (30.0 if i == 4 else 0.0)  # one cold start
            t += 1.0
            sample = Sample("m", spec.provider, Outcome.OK, ttft, t, source=Source.BENCH,
                            prompt_tokens=size)  # fmt: skip
            writer.append(Record(sample, "counted", i))
    writer.close()
    report = build_report(read_run(path))
    slopes = {s.spec.provider: s for s in report.slopes}
    assert slopes["slow"].s_per_1k == pytest.approx(0.8) and slopes["slow"].at_zero_s == (
        pytest.approx(0.3))  # fmt: skip
    assert slopes["fast"].s_per_1k == pytest.approx(0.05)
    assert "| m | slow | 0.8000 | 0.300 s |" in markdown(report)


def test_bad_prompt_sizes_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_sizes("500, 4_000,500") == (500, 4000)
    for bad in ("0", "lots", "500,-1"):
        with pytest.raises(SystemExit) as exited:
            main(["bench", "--config", "c.yaml", "--prompt-tokens", bad])
        assert exited.value.code == 2
        assert "--prompt-tokens" in capsys.readouterr().err
