"""The scoreboard's periodic pass rescores the pairs whose window lost a sample to age, and
only those."""

from __future__ import annotations

import time
from pathlib import Path

from proxy.config import MemoryStoreConfig
from proxy.domain import Outcome, Pair, Sample
from proxy.policy import PolicyHolder
from proxy.scoreboard import Scoreboard
from proxy.store.memory import MemoryStore
from tests.helpers import wait_until

AGING = Pair("m", "aging")
FRESH = Pair("m", "fresh")


async def test_the_periodic_pass_rescores_pairs_whose_samples_aged_out(tmp_path: Path) -> None:
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
    assert await board.refresh() in (0, 1)  # nothing new: at most the aging pair

    async def aged_out() -> bool:
        await board.refresh()
        return board.snapshot[AGING].n == 0

    await wait_until(aged_out, timeout=5)
    assert await board.refresh() == 0  # it aged out once; nothing is rescored again
    assert board.snapshot[FRESH].n == 1
