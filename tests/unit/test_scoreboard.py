"""The scoreboard's periodic pass rescores every pair (evidence ages: its weight and so its
posterior change with the clock), so samples leave a window with no new traffic."""

from __future__ import annotations

import time
from pathlib import Path

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.memory import MemoryStore
from proxy.settings.config import MemoryStoreConfig
from proxy.settings.policy import PolicyHolder, PolicySet
from tests.helpers import wait_until

AGING = Pair("m", "aging")
FRESH = Pair("m", "fresh")


async def test_the_periodic_pass_rescores_every_pair_and_samples_age_out(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults: {window: {max_age_s: 2.0}}\n")
    store = MemoryStore(MemoryStoreConfig())
    board = Scoreboard(store, PolicyHolder([policy]), full_every_s=0.0)
    now = time.time()
    await store.append(
        [
            Sample("m", "aging", Outcome.OK, 0.1, now - 1.7),
            Sample("m", "fresh", Outcome.OK, 0.1, now + 60),  # stays in its window
        ],
        [],
    )
    assert await board.refresh() == 2
    assert board.snapshot[AGING].n == 1
    assert await board.refresh() == 2  # nothing new, but every posterior ages

    async def aged_out() -> bool:
        await board.refresh()
        return board.snapshot[AGING].n == 0

    await wait_until(aged_out, timeout=5)
    fresh = board.snapshot[FRESH]
    assert fresh.n == 1 and fresh.belief is not None
    aging = board.snapshot[AGING]
    assert aging.belief is not None and aging.belief.n_eff == 0.0  # only the model's prior


async def test_each_refresh_rescores_a_slice_of_the_models_and_every_model_in_turn() -> None:
    """10 models, a refresh every second, every model within 5 s: two models a refresh,
    all ten after five refreshes (a whole pass in one refresh costs seconds at 2,000 pairs)."""
    store = MemoryStore(MemoryStoreConfig())
    board = Scoreboard(store, PolicyHolder([], PolicySet()), refresh_s=1.0, full_every_s=5.0)
    now = time.time()
    await store.append([Sample(f"m{i}", "p", Outcome.OK, 0.1, now - 1) for i in range(10)], [])
    assert await board.refresh() == 10  # the new windows (the ageing slice among them)
    seen: set[str] = set()
    for _ in range(5):
        before = dict(board.snapshot)
        assert await board.refresh() == 2
        seen |= {p.model for p, s in board.snapshot.items() if s is not before[p]}
    assert seen == {f"m{i}" for i in range(10)}
