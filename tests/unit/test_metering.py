"""Metering (proxy.serving.metering): the usage chunk of a stream is noted as events pass, dropped
when the client did not ask for it, and a request's cost is its tokens x its pair's price.
The affinity table (routing.affinity): held until its time runs out, bounded, moved by bind."""

from __future__ import annotations

import orjson
import pytest

from proxy.routing.affinity import AffinityTable
from proxy.serving.metering import Meter, UsageTap, asks_for_usage
from proxy.settings.policy import Affinity
from proxy.settings.pricing import PairPrice


def event(payload: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


CONTENT = event({"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
DONE = b"data: [DONE]\n\n"


def test_the_usage_chunk_is_noted_and_dropped_unless_asked_for() -> None:
    strip = UsageTap(strip=True)
    assert strip(CONTENT) is CONTENT  # no usage object: untouched, not parsed
    assert strip(CONTENT + USAGE + DONE) == CONTENT + DONE
    assert (strip.usage.prompt_tokens, strip.usage.completion_tokens) == (11, 4)
    keep = UsageTap(strip=False)
    assert keep(CONTENT + USAGE + DONE) == CONTENT + USAGE + DONE
    assert keep.usage.completion_tokens == 4


def test_a_responses_streams_usage_is_in_its_last_event_which_passes_untouched() -> None:
    delta = b"event: response.output_text.delta\n" + event(
        {"type": "response.output_text.delta", "delta": "hi"})  # fmt: skip
    done = b"event: response.completed\n" + event({
        "type": "response.completed",
        "response": {"status": "completed", "usage": {"input_tokens": 9, "output_tokens": 3}},
    })  # fmt: skip
    tap = UsageTap(strip=False)  # what a Responses request gets (proxy.api.steer)
    assert tap(delta + done) == delta + done
    assert (tap.usage.prompt_tokens, tap.usage.completion_tokens) == (9, 3)


def test_usage_on_a_content_chunk_is_kept() -> None:
    both = event({"choices": [{"index": 0, "delta": {"content": "x"}}],
                  "usage": {"prompt_tokens": 2, "completion_tokens": 1}})  # fmt: skip
    tap = UsageTap(strip=True)
    assert tap(both) == both and tap.usage.prompt_tokens == 2


def test_cost_is_tokens_times_the_serving_pairs_price() -> None:
    tap = UsageTap(strip=True)
    tap(USAGE)
    meter = Meter({"a": PairPrice(2e-6, 8e-6, "config")}, tap)
    assert meter.cost_usd("a") == pytest.approx(11 * 2e-6 + 4 * 8e-6)
    assert meter.cost_usd("b") is None  # unpriced
    assert Meter({"a": PairPrice(1e-6, 1e-6, "config")}, UsageTap(strip=True)).cost_usd("a") is None
    embedding = UsageTap(strip=False)
    embedding.note_body({"usage": {"prompt_tokens": 5, "total_tokens": 5}})
    assert Meter({"a": PairPrice(1e-6, 1e-6, "config")}, embedding).cost_usd("a") == pytest.approx(
        5e-6
    )


def test_asks_for_usage() -> None:
    assert asks_for_usage({"stream_options": {"include_usage": True}})
    assert not asks_for_usage({"stream_options": {"include_usage": False}})
    assert not asks_for_usage({})


def test_affinity_holds_until_its_time_and_is_bounded() -> None:
    table, policy = AffinityTable(), Affinity(enabled=True, ttl_s=10, max_keys=2)
    table.bind("m", "k1", "a", 100.0, policy)
    assert table.lookup("m", "k1", 105.0) == "a"
    assert table.lookup("other", "k1", 105.0) is None  # per model
    table.bind("m", "k1", "b", 105.0, policy)  # served elsewhere: the binding moves
    assert table.lookup("m", "k1", 114.0) == "b"
    assert table.lookup("m", "k1", 115.0) is None and len(table) == 0  # expired, forgotten
    for i, key in enumerate(("k1", "k2", "k3")):
        table.bind("m", key, "a", 200.0 + i, policy)
    assert len(table) == 2 and table.lookup("m", "k1", 203.0) is None  # the oldest went
