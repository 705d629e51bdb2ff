"""Bench samples into a store (source=bench), so a proxy starts knowing the pairs."""

from __future__ import annotations

from pathlib import Path

import yaml

from proxy.cli import main
from proxy.core.domain import Pair, Source
from proxy.learning.store.memory import MemoryStore
from proxy.method.importer import import_samples, plan_import
from proxy.method.samplefile import read_run
from proxy.settings.config import MemoryStoreConfig, load_config
from tests.method.conftest import synthetic_run, write_config


async def test_counted_samples_of_configured_pairs_reach_the_store(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    upstream = config.models["kimi-k2.6"].providers
    run = synthetic_run(
        tmp_path / "s.jsonl",
        {("kimi-k2.6", "provider-a"): [0.3, 0.4, None], ("other-model", "provider-a"): [0.2]},
    )
    # synthetic_run names upstream models "<provider>/<model>": make one match the config.
    text = run.read_text().replace("provider-a/kimi-k2.6", upstream["provider-a"])
    run.write_text(text)

    plan = plan_import(read_run(run), config)
    assert plan.skipped == {Pair("other-model", "provider-a"): "not configured"}
    store = MemoryStore(MemoryStoreConfig())
    assert await import_samples(plan.samples, store) == 3
    windows = await store.changed_windows({})
    samples = windows[Pair("kimi-k2.6", "provider-a")].samples
    assert [s.ttft_s for s in samples] == [0.3, 0.4, None], "warm-ups stay out"
    assert {s.source for s in samples} == {Source.BENCH}


def test_import_command_names_what_it_skipped(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    run = synthetic_run(tmp_path / "s.jsonl", {("kimi-k2.6", "provider-b"): [0.3]})
    assert main(["import", str(run), "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "skipped kimi-k2.6@provider-b: measured as 'provider-b/kimi-k2.6'" in captured.err
    assert "no counted samples of a pair this config serves" in captured.err

    data = yaml.safe_load(config.read_text())
    data["models"]["kimi-k2.6"]["providers"]["provider-b"] = "provider-b/kimi-k2.6"
    config.write_text(yaml.safe_dump(data))
    assert main(["import", str(run), "--config", str(config)]) == 0
    assert "imported 1 samples (1 pairs) into the memory store" in capsys.readouterr().out
