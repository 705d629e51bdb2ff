"""Bench fixtures: MISSION.md's simulated market, fast, and a config that points at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest
import yaml

from proxy.core.domain import Outcome, Sample, Source
from proxy.demo import MISSION_MODELS
from proxy.method.plan import Judgement, Method, Pacing, PairSpec
from proxy.method.samplefile import Record, SampleWriter, new_header
from proxy.simulator import Market, load_scenario

# Every simulated delay x0.05: a 0.39 s TTFT takes 20 ms, a 40 s cold start 2 s.
TIME_SCALE = 0.05


@pytest.fixture
async def mission_market() -> AsyncIterator[Market]:
    scenario = load_scenario(resources.files("proxy") / "scenarios" / "mission.yaml")
    async with Market(scenario.with_time_scale(TIME_SCALE).with_free_ports()) as market:
        yield market


def write_config(directory: Path, market: Market | None = None) -> Path:
    """config.yaml (+ policy.yaml with the cold-start floor scaled like the market's delays)
    for the MISSION models; without a market the providers point at a closed port."""
    providers = {
        name: {
            "kind": "openai",
            "base_url": market.base_url(name) if market else "http://127.0.0.1:9/v1",
            "api_key": market.api_key(name) if market else f"key-{name}",
        }
        for name in ("provider-a", "provider-b", "provider-c")
    }
    config = {
        "auth": {"allow_unauthenticated": True},  # the bench serves nothing (loopback anyway)
        "providers": providers,
        "models": {model: {"providers": ids} for model, ids in MISSION_MODELS.items()},
        "policies": ["policy.yaml"],
    }
    (directory / "policy.yaml").write_text(
        yaml.safe_dump({"defaults": {"cold_start": {"floor_s": 2.0 * TIME_SCALE}}})
    )
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


def synthetic_run(
    path: Path,
    ttfts: dict[tuple[str, str], list[float | None]],
    *,
    requests: int | None = None,
    warmup: int = 1,
    min_samples: int = 10,
) -> Path:
    """A samples file whose counted TTFTs per (model, provider) are `ttfts` (None: a 500),
    each pair with `warmup` warm-ups of 9 s that the report must leave out."""
    specs = tuple(PairSpec(m, p, f"{p}/{m}") for m, p in ttfts)
    n = requests if requests is not None else max(map(len, ttfts.values()))
    method = Method(specs, requests=n, warmup=warmup, concurrency=1, prompt="hi", max_tokens=4)
    judgement = Judgement({}, min_samples=min_samples)
    header = new_header(method, Pacing(spacing_s=0.0), judgement)
    writer = SampleWriter.create(path, header)
    t = header.started
    for spec in specs:
        for i in range(warmup):
            writer.append(Record(_sample(spec, 9.0, t), "warmup", i))
        for i, ttft in enumerate(ttfts[spec.model, spec.provider]):
            t += 1.0
            writer.append(Record(_sample(spec, ttft, t), "counted", i, None if ttft else "500"))
    writer.close()
    return path


def _sample(spec: PairSpec, ttft: float | None, t: float) -> Sample:
    outcome = Outcome.OK if ttft is not None else Outcome.HTTP_5XX
    return Sample(spec.model, spec.provider, outcome, ttft, t, source=Source.BENCH)
