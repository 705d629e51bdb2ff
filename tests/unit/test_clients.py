"""Named clients without servers: their config and its errors, the registry (keys, digests,
anonymous), reload keeping the last good, permissions and the token estimate, OpenAI's
headers and 429 bodies, the gate's fallback to its share while the store is away, the cost
of a request's attempts, the log line's client, and a sample's client in Redis."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from proxy.clients import ClientsHolder, Gate, Registry
from proxy.clients.periods import Periods, day_ends_in_s, month_ends_in_s
from proxy.clients.permissions import (
    allowed_controls,
    check_caps,
    estimate_tokens,
    model_pairs,
    visible,
)
from proxy.clients.refusals import duration, rate_headers, refusal_error
from proxy.core import requestid
from proxy.core.domain import Attempt, Decision, Outcome, Pair, Sample
from proxy.core.errors import (
    ClientRateLimited,
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    QuotaExceeded,
)
from proxy.learning.store.base import (
    ClientAsk,
    ClientCharge,
    ClientLimits,
    ClientUse,
    StoreUnavailable,
)
from proxy.learning.store.memory import MemoryStore
from proxy.learning.store.redis_schema import pack_sample, unpack_samples
from proxy.serving.endpoint import CHAT_COMPLETIONS
from proxy.serving.metering import meter_for, request_cost
from proxy.settings.auth import AuthConfig
from proxy.settings.config import Config, MemoryStoreConfig, load_config, parse_config
from proxy.settings.pricing import PairPrice
from proxy.telemetry.logs import JsonFormatter
from proxy.telemetry.metrics import Metrics
from tests.helpers import wait_until

KEY_A = "app-a-7f3c91d2e8b4a6c05f1e"
KEY_B = "app-b-19e4c7a2d05b3f86e7c1"
ANON = "anon-3c1f9e7d5b2a08e4c6d1"
ADMIN = "admin-8e2c4a6f0d9b1e3c5a7f"
BASE = {
    "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": {"m": {"providers": {"p": "m"}}, "n": {"providers": {"p": "n"}}},
}


def config(auth: dict[str, Any]) -> Config:
    return parse_config({**BASE, "auth": auth}, Path("config.yaml"))


def error_of(auth: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config(auth)
    return str(info.value)


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ({"app a": {"key": KEY_A}}, "client name 'app a': 1 to 64 of"),
        ({"anonymous": {"key": KEY_A}}, "'anonymous' is the client of auth.api_keys"),
        ({"a": {"key": KEY_A, "keys": [KEY_B]}}, "auth.clients.a: give either key or keys"),
        ({"a": {}}, "auth.clients.a: give either key or keys"),
        ({"a": {"key": "short-7c1"}}, "auth.clients.a.key: the key has 9 characters"),
        ({"a": {"keys": [KEY_A, "   "]}}, "auth.clients.a.keys: the key at index 1 is empty"),
        ({"a": {"key": KEY_A}, "b": {"keys": [KEY_B, KEY_A]}}, "auth.clients.a and "
         "auth.clients.b share a key"),
        ({"a": {"key": ANON}}, "auth.api_keys and auth.clients.a share a key"),
        ({"a": {"key": ADMIN}}, "auth.admin_keys and auth.api_keys share a key"),
        ({"a": {"key": KEY_A, "models": ["m", "zz"]}}, "auth.clients.a.models: unknown model "
         "'zz' (known: m, n)"),
        ({"a": {"key": KEY_A, "controls": ["teleport"]}}, "auth.clients.a.controls.0"),
        ({"a": {"key": KEY_A, "limits": {"requests_per_minute": 0}}},
         "auth.clients.a.limits.requests_per_minute: Input should be greater than or equal"),
        ({"a": {"key": KEY_A, "budget": {"usd_per_day": -1}}}, "auth.clients.a.budget"),
        ({"a": {"key": KEY_A, "colour": "red"}}, "auth.clients.a.colour: Extra inputs"),
    ],
)  # fmt: skip
def test_a_bad_client_is_an_error_naming_its_field_never_its_key(
    clients: dict[str, Any], message: str
) -> None:
    error = error_of({"api_keys": [ANON], "admin_keys": [ADMIN], "clients": clients})
    assert message in error
    assert KEY_A not in error and KEY_B not in error and ADMIN not in error


def test_named_clients_alone_are_enough_keys() -> None:
    assert config({"clients": {"a": {"key": KEY_A}}}).auth.clients["a"].secrets() == [KEY_A]
    assert not AuthConfig.model_validate({"clients": {"a": {"key": KEY_A}}}).is_open


# -- the registry ------------------------------------------------------------------------


def test_keys_and_digests_name_their_client_and_api_keys_are_anonymous() -> None:
    digest = "sha256:" + hashlib.sha256(KEY_B.encode()).hexdigest()
    auth = config({"api_keys": [ANON], "clients": {
        "a": {"key": KEY_A, "limits": {"requests_per_minute": 5}, "models": ["m"]},
        "b": {"keys": [digest, "app-b2-5e1d7c3a9f0b2e48d6c1"]}}}).auth  # fmt: skip
    registry = Registry(auth, hold_s=60.0)
    a, b = registry.identify(KEY_A), registry.identify(KEY_B)
    assert a is not None and b is not None and (a.name, b.name) == ("a", "b")
    assert registry.identify("app-b2-5e1d7c3a9f0b2e48d6c1") is b
    assert registry.identify(ANON) is registry.anonymous and registry.anonymous.name == "anonymous"
    for stranger in ("", digest, KEY_A + " ", KEY_A[:-1]):
        assert registry.identify(stranger) is None
    assert a.limits is not None and a.limits.requests == 5 and a.limits.hold_s == 60.0
    assert b.limits is None and registry.anonymous.limits is None  # never asks the store
    assert a.sees("m") and not a.sees("n") and b.sees("n")
    assert not registry.is_open and len(registry) == 4


def test_a_reload_swaps_the_clients_or_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"

    def write(clients: dict[str, Any]) -> None:
        path.write_text(yaml.safe_dump({**BASE, "auth": {"clients": clients}}))

    write({"a": {"key": KEY_A}})
    holder = ClientsHolder(load_config(path))
    write({"b": {"key": KEY_B}})
    assert holder.reload_if_changed() is None and list(holder.current.by_name) == ["b"]
    write({"b": {"key": "short-7c1"}})
    assert "auth.clients.b.key" in (holder.reload() or "")
    assert holder.current.identify(KEY_B) is not None  # the last good
    path.write_text(yaml.safe_dump({**BASE, "models": {"zz": {"providers": {"p": "z"}}},
                                    "auth": {"clients": {"b": {"key": KEY_B,
                                                               "models": ["zz"]}}}}))  # fmt: skip
    assert "not served by this process" in (holder.reload() or "")
    assert holder.reload_if_changed() is None  # unchanged since: nothing to do


# -- permissions -------------------------------------------------------------------------


def registry_with(**rules: Any) -> Registry:
    return Registry(config({"clients": {"a": {"key": KEY_A, **rules}}}).auth, 60.0)


def test_another_models_404_is_the_same_as_an_unknown_ones() -> None:
    client = registry_with(models=["m"]).by_name["a"]
    pairs = {"m": {"p": "m"}, "n": {"p": "n"}}
    assert visible(client, pairs) == ["m"] and model_pairs(client, pairs, "m") == {"p": "m"}
    messages = []
    for model in ("n", "zz"):
        with pytest.raises(ModelNotFound) as info:
            model_pairs(client, pairs, model)
        messages.append(info.value.message.replace(f"'{model}'", "'X'"))
    assert messages[0] == messages[1] == "model 'X' is not configured (known: m)"


def test_caps_controls_and_the_token_estimate() -> None:
    client = registry_with(max_tokens=100, max_n=2, controls=["sort"]).by_name["a"]
    fields = CHAT_COMPLETIONS.limited
    check_caps(client, {"max_tokens": 100, "n": 2}, fields)
    for body, param in (({"max_completion_tokens": 101}, "max_completion_tokens"),
                        ({"n": 3}, "n")):  # fmt: skip
        with pytest.raises(InvalidRequest, match="for client 'a'") as info:
            check_caps(client, body, fields)
        assert info.value.param == param
    assert set(allowed_controls(client, ["only"])) == {"sort", "only"}
    assert set(allowed_controls(client, [])) == {"sort"}
    assert estimate_tokens({"max_tokens": 50, "n": 3}, 20, fields) == 170
    assert estimate_tokens({"max_completion_tokens": 50}, 20, fields) == 70
    assert estimate_tokens({}, 20, fields) == 20


# -- what a client is told ---------------------------------------------------------------


def test_durations_are_spelled_as_openai_does() -> None:
    assert [duration(s) for s in (0.0004, 0.25, 1.0, 12.5, 59.9996, 60.0, 361.2)] == [
        "0ms", "250ms", "1s", "12.5s", "60s", "1m0s", "6m1s"]  # fmt: skip


def use(**kw: Any) -> ClientUse:
    base: dict[str, Any] = {"granted": False, "refusal": None, "requests": 0, "tokens": 0,
                            "concurrent": 0, "usd_day": 0.0, "usd_month": 0.0}  # fmt: skip
    return ClientUse(**{**base, **kw})


def test_headers_and_429_bodies() -> None:
    limits = ClientLimits(requests=10, tokens=1000, concurrent=2, usd_per_day=5.0)
    now = use(requests=10, tokens=400, concurrent=1, reset_s=42.5, refusal="requests",
              retry_after_s=3.25)  # fmt: skip
    assert {k.decode(): v.decode() for k, v in rate_headers(limits, now)} == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "42.5s", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "42.5s",
        "x-ratelimit-limit-concurrent": "2", "x-ratelimit-remaining-concurrent": "1",
    }  # fmt: skip
    error = refusal_error("a", limits, now, 20, 0.0)
    assert isinstance(error, ClientRateLimited) and error.status == 429
    assert error.body()["error"]["type"] == "requests"
    assert error.body()["error"]["code"] == "rate_limit_exceeded"
    headers = error.headers()
    assert headers["Retry-After"] == "4" and headers["retry-after-ms"] == "3250"
    tokens = refusal_error("a", limits, use(refusal="tokens", tokens=990, retry_after_s=1), 20, 0)
    assert tokens.body()["error"]["type"] == "tokens" and "Requested 20" in tokens.message
    quota = refusal_error("a", limits, use(refusal="day", usd_day=5.01), 20, 3600.5)
    assert isinstance(quota, QuotaExceeded) and quota.status == 429
    assert quota.body()["error"]["code"] == quota.body()["error"]["type"] == "insufficient_quota"
    assert quota.headers()["Retry-After"] == "3601" and quota.headers()["x-should-retry"] == "false"


def test_periods_are_utc_days_and_months() -> None:
    t = 1738367999.5  # 2025-01-31 23:59:59.5 UTC
    periods = Periods()
    assert periods.names(t) == ("20250131", "202501")
    assert periods.names(t + 1) == ("20250201", "202502")
    assert day_ends_in_s(t) == pytest.approx(0.5) and month_ends_in_s(t) == pytest.approx(0.5)
    assert month_ends_in_s(t + 1) == pytest.approx(28 * 86400)


# -- the gate while the store is away ----------------------------------------------------


class FlakyStore(MemoryStore):
    """The memory store's counting, answering as a shared store would until it is `down`."""

    backend = "redis"

    def __init__(self) -> None:
        super().__init__(MemoryStoreConfig())
        self.down = False

    async def admit_client(
        self, ask: ClientAsk, limits: ClientLimits, charges: Sequence[ClientCharge] = ()
    ) -> ClientUse:
        if self.down:
            raise StoreUnavailable("redis: unreachable")
        return await super().admit_client(ask, limits, charges)


async def test_without_the_store_a_replica_counts_its_share_of_limits_and_budget() -> None:
    store = FlakyStore()
    metrics = Metrics()
    gate = Gate(store, metrics, share=0.5)
    client = registry_with(limits={"requests_per_minute": 9},
                           budget={"usd_per_day": 1.0}).by_name["a"]  # fmt: skip
    ticket = await gate.admit(client, 10)
    await gate.charge(ticket, 10, 0.4)  # queued: the next admission carries it
    second = await gate.admit(client, 10)
    assert gate.carried_charges == 1 and gate.charge_batches == 0
    assert second.use is not None and second.use.usd_day == pytest.approx(0.4)
    await gate.charge(second, 10, 0.0)
    await gate.flush()  # the store knows 0.4 of the day's 1.0 is spent, and so does the gate
    store.down = True
    served = []
    for _ in range(10):  # its share: floor(9 x 0.5) = 4 requests, counted anew
        try:
            served.append(await gate.admit(client, 10))
        except ClientRateLimited:
            continue
    assert len(served) == 4 and all(t.is_local for t in served) and gate.is_local
    assert "ttft_router_client_limits_local 1.0" in metrics_text(metrics)
    # its share of the budget left: (1.0 - 0.4) x 0.5 = 0.3 USD
    await gate.charge(served[0], 10, 0.2)
    await gate.charge(served[1], 10, 0.2)
    with pytest.raises(QuotaExceeded):
        await gate.admit(client, 10)
    store.down = False

    async def back() -> bool:  # the store is asked again LOCAL_FOR_S after the last failure
        try:
            return not (await gate.admit(client, 10)).is_local
        except (ClientRateLimited, QuotaExceeded):
            return False

    await wait_until(back, timeout=5)
    assert not gate.is_local and "ttft_router_client_limits_local 0.0" in metrics_text(metrics)


def metrics_text(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


# -- what a request cost -----------------------------------------------------------------


def test_a_request_is_charged_its_answer_and_its_other_attempts_that_reached_a_provider() -> None:
    prices = {p: PairPrice(1e-6, 4e-6, "config") for p in ("a", "b", "c")}
    meter = meter_for(prices, {}, usage_in_stream=True)
    assert meter is not None
    decision = Decision("d", "m", 0.0, (), (), "")
    decision.attempts = [
        Attempt("a", Outcome.HTTP_5XX),  # refused: nothing to pay
        Attempt("b", Outcome.CANCELLED, ttft_s=None),  # a hedge's loser: its prompt
        Attempt("c", Outcome.OK, ttft_s=0.1),  # the winner: metered
    ]
    decision.winner, decision.cost_usd = "c", 0.002
    assert request_cost(decision, meter, 1000) == pytest.approx(0.002 + 1000 * 1e-6)
    decision.cost_usd = None  # no usage reported: its prompt and a first token
    assert request_cost(decision, meter, 1000) == pytest.approx(2 * 1000 * 1e-6 + 4e-6)
    assert request_cost(decision, meter_for({}, {}, True, counts_tokens=True), 1000) is None


# -- logs and samples --------------------------------------------------------------------


def test_every_log_line_of_a_request_names_its_client() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    token = requestid.CLIENT.set("app-a")
    try:
        assert orjson.loads(JsonFormatter().format(record))["client"] == "app-a"
    finally:
        requestid.CLIENT.reset(token)
    assert "client" not in orjson.loads(JsonFormatter().format(record))


def test_a_samples_client_is_its_twelfth_element_and_shorter_members_still_decode() -> None:
    pair = Pair("m", "p")
    named = Sample("m", "p", Outcome.OK, 0.25, 1000.5, total_s=0.3, replica="r1", client="a")
    timed = Sample("m", "p", Outcome.OK, 0.25, 1000.5, total_s=0.3, replica="r1",
                   output_tokens=12, decode_s=0.5, client="a")  # fmt: skip
    anonymous = Sample("m", "p", Outcome.OK, 0.25, 1000.5, total_s=0.3, replica="r1")
    assert orjson.loads(pack_sample(named))[9:] == [None, None, "a"]  # v2's pair as nulls
    assert orjson.loads(pack_sample(timed))[9:] == [12, 0.5, "a"]
    assert len(orjson.loads(pack_sample(anonymous))) == 9  # as every sample before
    v1 = b'[999.0,"timeout",null,null,5.0,5.0,"passive",12,"r0"]'
    v2 = b'[999.0,"ok",0.1,0.05,1.0,null,"passive",12,"r0",40,0.8]'
    decoded = unpack_samples(pair, [pack_sample(s) for s in (named, timed, anonymous)] + [v1, v2])
    assert decoded[:3] == [named, timed, anonymous]
    assert decoded[3].client == "" and decoded[3].censored_at_s == 5.0
    assert (decoded[4].client, decoded[4].output_tokens) == ("", 40)
    assert Sample.from_dict(timed.to_dict()) == timed
