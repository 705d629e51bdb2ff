"""What every store's client limits do, run against the memory store, one Redis and a Redis
Cluster: replicas sharing a store admit exactly a limit's worth, atomically; a refusal
counts nothing; a charge corrects the tokens, frees the slot and adds the spend, once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from proxy.learning.store.base import ClientAsk, ClientCharge, ClientLimits, Store
from tests.helpers import wait_until

_ids = itertools.count()
DAY, MONTH = "20250131", "202501"


def ask(client: str, tokens: int = 10) -> ClientAsk:
    return ClientAsk(client, f"req-{next(_ids)}", tokens, DAY, MONTH)


def charge(of: ClientAsk, tokens: int, cost_usd: float) -> ClientCharge:
    return ClientCharge(of.client, of.request_id, tokens, cost_usd, DAY, MONTH)


async def replicas_admit_one_limit(replicas: Sequence[Store], client: str) -> None:
    """Many admissions at once from every replica: exactly the limit's worth are granted."""
    limits = ClientLimits(requests=12)
    uses = await asyncio.gather(
        *(replicas[i % len(replicas)].admit_client(ask(client), limits) for i in range(40))
    )
    assert sum(use.granted for use in uses) == 12
    assert {use.refusal for use in uses if not use.granted} == {"requests"}
    refused = next(use for use in uses if not use.granted)
    assert refused.requests == 12 and refused.retry_after_s is not None
    assert 0 < refused.retry_after_s <= 60 and 0 < refused.reset_s <= 60
    [use] = (await replicas[-1].client_use([client], limits, DAY, MONTH)).values()
    assert (use.requests, use.refused_day, use.concurrent) == (12, 28, 12)


async def tokens_slots_and_spend(store: Store, client: str) -> None:
    limits = ClientLimits(tokens=100, concurrent=2, usd_per_day=0.01, usd_per_month=1.0)
    first, second = ask(client, 40), ask(client, 40)
    assert (await store.admit_client(first, limits)).granted
    use = await store.admit_client(second, limits)
    assert (use.tokens, use.concurrent) == (80, 2)
    assert (await store.admit_client(ask(client, 1), limits)).refusal == "concurrent"
    await store.charge_clients([charge(first, 5, 0.004)])  # the answer: 5 tokens, not 40
    await store.charge_clients([charge(first, 5, 0.004)])  # a re-sent batch counts once
    too_large = await store.admit_client(ask(client, 101), limits)
    assert too_large.refusal == "too_large" and not too_large.granted
    third = ask(client, 50)
    use = await store.admit_client(third, limits)
    assert use.granted and (use.tokens, use.concurrent) == (95, 2)
    tokens = await store.admit_client(ask(client, 10), ClientLimits(tokens=100))
    assert tokens.refusal == "tokens" and tokens.retry_after_s is not None
    await store.charge_clients([charge(second, 40, 0.007), charge(third, 50, 0.0)])
    over = await store.admit_client(ask(client, 1), limits)
    assert over.refusal == "day" and round(over.usd_day, 9) == 0.011
    [use] = (await store.client_use([client], limits, DAY, MONTH)).values()
    assert (use.requests_day, use.tokens_day, use.concurrent) == (3, 95, 0)
    assert round(use.usd_month, 9) == 0.011 and use.last_seen is not None
    [other_day] = (await store.client_use([client], limits, "20250201", "202502")).values()
    assert other_day.usd_day == 0 and other_day.usd_month == 0  # new periods start at zero


async def requests_leave_the_window(store: Store, client: str) -> None:
    limits = ClientLimits(requests=1, window_s=0.3)
    assert (await store.admit_client(ask(client), limits)).granted
    refused = await store.admit_client(ask(client), limits)
    assert refused.refusal == "requests" and refused.retry_after_s is not None
    assert 0 < refused.retry_after_s <= 0.3

    async def admitted() -> bool:
        return (await store.admit_client(ask(client), limits)).granted

    await wait_until(admitted, timeout=5)


async def a_slot_frees_itself_after_hold_s(store: Store, client: str) -> None:
    limits = ClientLimits(concurrent=1, hold_s=0.3)
    assert (await store.admit_client(ask(client), limits)).granted  # never charged (a crash)
    assert (await store.admit_client(ask(client), limits)).refusal == "concurrent"

    async def freed() -> bool:
        return (await store.admit_client(ask(client), limits)).granted

    await wait_until(freed, timeout=5)
