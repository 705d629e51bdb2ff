"""The commands the Redis store sends, built from its config: plain tuples, no I/O.

A flush is two lists: the windows' scripts and the decision lists first, the change index
after them. On one connection (one endpoint, Sentinel) both go in one pipeline, in that
order; on a Cluster the index is sent only once the windows are acknowledged, because a
pipeline there runs on several nodes at once and a reader must never see a pair announced
in the index before its window holds the samples announced (redis_store.py).
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core.domain import Pair, Sample
from proxy.learning.store.base import (
    REFUSALS,
    BudgetLimits,
    BudgetUse,
    ClientAsk,
    ClientCharge,
    ClientLimits,
    ClientUse,
    ProbeSpend,
)
from proxy.learning.store.budget import NANO
from proxy.learning.store.redis_schema import (
    ADMIT_CLIENT,
    APPEND_SAMPLES,
    CHARGE_CLIENT,
    CLIENT_USE,
    LATE_S,
    READ_WINDOW,
    SPEND_BUDGET,
    TOUCH_INDEX,
    VERSION_STEP_MAX,
    Command,
    budget_keys,
    changes_key,
    client_keys,
    decisions_key,
    epoch_key,
    late_key,
    lease_key,
    model_decisions_key,
    pack_pair,
    pack_sample,
    versions_key,
    window_key,
)
from proxy.settings.config import RedisStoreConfig

_REFUSALS = {1: "probes", 2: "cost", 3: "model probes", 4: "model cost"}


@dataclass(frozen=True, slots=True)
class Flush:
    """One flush: `windows` (appends and decision lists), then `index` (empty or one)."""

    windows: list[Command]
    index: list[Command]


class Commands:
    def __init__(self, config: RedisStoreConfig, replica: str) -> None:
        self.prefix = config.prefix
        self._config = config
        self._replica = replica
        self.ttl_s = max(1, math.ceil(config.max_age_s))

    # Writing

    def flush(self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]) -> Flush:
        by_pair: dict[Pair, list[Sample]] = {}
        for sample in samples:
            by_pair.setdefault(sample.pair, []).append(sample)
        cutoff = time.time() - self._config.max_age_s
        step = random.randint(1, VERSION_STEP_MAX)
        windows = [self._append(pair, batch, cutoff, step) for pair, batch in by_pair.items()]
        windows += self._decisions(decisions)
        return Flush(windows, [self._touch_index(list(by_pair))] if by_pair else [])

    def _append(self, pair: Pair, batch: list[Sample], cutoff: float, step: int) -> Command:
        members = b"\n".join(pack_sample(sample) for sample in batch)
        oldest = min(sample.timestamp for sample in batch)
        return ("EVALSHA", APPEND_SAMPLES.sha, 3, *self._pair_keys(pair), pair.provider,
                self._config.max_samples, cutoff, self.ttl_s, LATE_S, oldest, step,
                members)  # fmt: skip

    def _touch_index(self, pairs: list[Pair]) -> Command:
        keys = (changes_key(self.prefix), epoch_key(self.prefix))
        # A fresh token each time: after a FLUSHALL or a restart, the first write names a
        # new epoch even if this replica wrote the last one.
        token = f"{self._replica}-{secrets.token_hex(8)}"
        packed = [pack_pair(pair) for pair in pairs]
        return ("EVALSHA", TOUCH_INDEX.sha, 2, *keys, token, self.ttl_s, *packed)

    def _decisions(self, decisions: Sequence[dict[str, Any]]) -> list[Command]:
        if not decisions:
            return []
        by_model: dict[str, list[bytes]] = {}
        packed = []
        for decision in decisions:
            row = orjson.dumps(decision)
            packed.append(row)
            by_model.setdefault(str(decision.get("model", "")), []).append(row)
        commands = _capped_list(decisions_key(self.prefix), packed,
                                self._config.max_decisions, self.ttl_s)  # fmt: skip
        for model, rows in by_model.items():
            key = model_decisions_key(self.prefix, model)
            commands += _capped_list(key, rows, self._config.max_decisions_per_model, self.ttl_s)
        return commands

    # Reading

    def poll(self, since: float | None, models: list[str]) -> list[Command]:
        """The epoch, the change index from `since` (ms; None: all of it), and the versions
        hashes of `models`."""
        start: Any = "-inf" if since is None else since
        return [
            ("GET", epoch_key(self.prefix)),
            ("ZRANGEBYSCORE", changes_key(self.prefix), start, "+inf", "WITHSCORES"),
            *[("HGETALL", versions_key(self.prefix, model)) for model in models],
        ]

    def decisions(self, model: str | None, limit: int) -> Command:
        """The newest `limit` decisions of `model` (None: of every model), newest first."""
        if model is None:
            return ("LRANGE", decisions_key(self.prefix), 0, limit - 1)
        return ("LRANGE", model_decisions_key(self.prefix, model), 0, limit - 1)

    def read_window(self, pair: Pair, known: int, bound: float) -> Command:
        return ("EVALSHA", READ_WINDOW.sha, 3, *self._pair_keys(pair), pair.provider, known,
                bound)  # fmt: skip

    def _pair_keys(self, pair: Pair) -> tuple[str, str, str]:
        return (
            window_key(self.prefix, pair),
            versions_key(self.prefix, pair.model),
            late_key(self.prefix, pair.model),
        )

    # Leases and the probe budget

    def lease(self, pair: Pair, slot: str, holder: str, ttl_s: float) -> list[Command]:
        """SET NX PX and a GET of the holder: one key, one round trip, no script."""
        key = lease_key(self.prefix, pair, slot)
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        return [("SET", key, holder, "NX", "PX", ttl_ms), ("GET", key)]

    def budget(self, op: str, spend: ProbeSpend, limits: BudgetLimits) -> Command:
        """`op` is "spend" (count or settle) or "refund"; see SPEND_BUDGET."""
        model_probes = -1 if limits.max_probes_per_model is None else limits.max_probes_per_model
        model_cost = (
            -1 if limits.max_cost_usd_per_model is None else _nano(limits.max_cost_usd_per_model)
        )
        window_ms = max(1, math.ceil(limits.window_s * 1000))
        return ("EVALSHA", SPEND_BUDGET.sha, 3, *budget_keys(self.prefix), op, spend.spend_id,
                spend.model, _nano(spend.cost_usd), window_ms, limits.max_probes,
                _nano(limits.max_cost_usd), model_probes, model_cost)  # fmt: skip


# How long a client's day and month keys live (past their period, for late readers), and
# how long a charge's request id is remembered (a batch re-sent within it counts once).
DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 33 * 86400
CHARGED_TTL_MS = 60_000


def admit_client(prefix: str, ask: ClientAsk, limits: ClientLimits) -> Command:
    """ADMIT_CLIENT for `ask` (docs/clients.md, "How limits are counted")."""
    keys = client_keys(prefix, ask.client, ask.day, ask.month)[:7]
    return ("EVALSHA", ADMIT_CLIENT.sha, len(keys), *keys, ask.request_id, ask.tokens,
            _ms(limits.window_s), _cap(limits.requests), _cap(limits.tokens),
            _cap(limits.concurrent), _ms(limits.hold_s), _nano_cap(limits.usd_per_day),
            _nano_cap(limits.usd_per_month), DAY_TTL_S, MONTH_TTL_S)  # fmt: skip


def charge_client(prefix: str, charge: ClientCharge) -> Command:
    keys = client_keys(prefix, charge.client, charge.day, charge.month)
    return ("EVALSHA", CHARGE_CLIENT.sha, len(keys), *keys, charge.request_id,
            max(0, charge.tokens), _nano(charge.cost_usd), DAY_TTL_S, MONTH_TTL_S,
            CHARGED_TTL_MS)  # fmt: skip


def read_client_use(prefix: str, client: str, limits: ClientLimits, day: str,
                    month: str) -> Command:  # fmt: skip
    keys = client_keys(prefix, client, day, month)[:7]
    return ("EVALSHA", CLIENT_USE.sha, len(keys), *keys, _ms(limits.window_s))


def admission(reply: list[Any]) -> ClientUse:
    """ADMIT_CLIENT's reply as a ClientUse."""
    refusal, requests, tokens, live, day, month, retry_ms, reset_ms = map(int, reply)
    return ClientUse(
        granted=refusal == 0, refusal=REFUSALS[refusal - 1] if refusal else None,
        requests=requests, tokens=tokens, concurrent=live, usd_day=day / NANO,
        usd_month=month / NANO, retry_after_s=None if retry_ms < 0 else retry_ms / 1000,
        reset_s=max(reset_ms, 0) / 1000,
    )  # fmt: skip


def client_use(reply: list[Any]) -> ClientUse:
    """CLIENT_USE's reply as a ClientUse (granted: True, nothing was asked)."""
    (requests, tokens, live, req_day, tok_day, usd_day, refused_day, req_month, tok_month,
     usd_month, seen_ms) = map(int, reply)  # fmt: skip
    return ClientUse(
        granted=True, refusal=None, requests=requests, tokens=tokens, concurrent=live,
        usd_day=usd_day / NANO, usd_month=usd_month / NANO, requests_day=req_day,
        tokens_day=tok_day, refused_day=refused_day, requests_month=req_month,
        tokens_month=tok_month, last_seen=None if seen_ms < 0 else seen_ms / 1000,
    )  # fmt: skip


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _cap(cap: int | None) -> int:
    return -1 if cap is None else cap


def _nano_cap(usd: float | None) -> int:
    return -1 if usd is None else _nano(usd)


def budget_use(reply: list[Any]) -> BudgetUse:
    """SPEND_BUDGET's reply as a BudgetUse."""
    granted, refusal, probes, nano, model_probes, model_nano, frees_ms = map(int, reply)
    return BudgetUse(
        granted=bool(granted),
        refusal=_REFUSALS.get(refusal),
        probes=probes,
        cost_usd=nano / NANO,
        model_probes=model_probes,
        model_cost_usd=model_nano / NANO,
        frees_in_s=None if frees_ms < 0 else frees_ms / 1000,
    )


def _nano(usd: float) -> int:
    return round(usd * NANO)


def _capped_list(key: str, rows: list[bytes], cap: int, ttl_s: int) -> list[Command]:
    """LPUSH (oldest first in, so the newest ends up at the head), LTRIM to `cap`, EXPIRE."""
    return [("LPUSH", key, *rows), ("LTRIM", key, 0, cap - 1), ("EXPIRE", key, ttl_s)]
