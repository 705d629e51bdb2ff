"""Decode throughput: measured per attempt (upstream.measure), carried through the Redis member
format, summarised per window (learning.decode) in OpenRouter's percentile convention, and
what a request's expected total time is (routing.total)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson

from proxy.core.domain import Outcome, Pair, Sample, Throughput, empty_score
from proxy.learning.decode import throughput_of
from proxy.learning.published import openrouter_fields, published
from proxy.learning.stats import compute_score
from proxy.learning.store.redis_schema import pack_sample, unpack_samples
from proxy.routing.total import expected_total_s, predicted_ttft_s
from proxy.settings.policy import ModelPolicy
from proxy.upstream.measure import AttemptClock
from proxy.upstream.sse import CHAT, RESPONSES

PAIR = Pair("m", "a")
NOW = 1_000_000.0
TOKEN = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
ROLE = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
FINISH = b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":42}}\n\n'


def decoded(rate: float, tokens: int = 101, age_s: float = 10.0) -> Sample:
    """A successful sample whose answer decoded `tokens` at `rate` tokens/s."""
    return Sample("m", "a", Outcome.OK, 0.2, NOW - age_s, output_tokens=tokens,
                  decode_s=(tokens - 1) / rate)  # fmt: skip


def test_percentiles_are_on_the_slow_side_as_openrouter_publishes_them() -> None:
    rates = [10.0 * k for k in range(1, 11)]  # 10 .. 100 tok/s
    t = throughput_of([decoded(r) for r in reversed(rates)])
    assert t is not None and t.n == 10
    # p50: the lower median; p90: the rate 90% of answers reached (the 10% quantile)
    assert (t.p50, t.p75, t.p90, t.p99) == (50.0, 30.0, 10.0, 10.0)
    assert t.output_tokens == 101


def test_percentiles_of_seeded_synthetic_rates_match_numpy() -> None:
    rng = np.random.default_rng(7)
    rates = rng.lognormal(np.log(80.0), 0.4, size=500)
    lengths = rng.integers(20, 400, size=500)
    window = [decoded(float(r), int(n)) for r, n in zip(rates, lengths, strict=True)]
    t = throughput_of(window)
    assert t is not None
    measured = np.array([s.tokens_per_s for s in window])
    for name, level in (("p50", 0.5), ("p75", 0.25), ("p90", 0.10), ("p99", 0.01)):
        expected = float(np.quantile(measured, level, method="inverted_cdf"))
        assert getattr(t, name) == expected, name
    assert t.p50 >= t.p75 >= t.p90 >= t.p99
    assert abs(t.p50 - 80.0) / 80.0 < 0.1  # the distribution's median, recovered
    assert t.output_tokens == float(np.quantile(lengths, 0.5, method="inverted_cdf"))


def test_samples_that_do_not_measure_throughput_are_left_out() -> None:
    others = [
        Sample("m", "a", Outcome.OK, 0.2, NOW - 5),  # an older sample: no decode fields
        Sample("m", "a", Outcome.OK, 0.2, NOW - 5, output_tokens=1, decode_s=0.0),  # one token
        Sample("m", "a", Outcome.OK, 0.2, NOW - 5, output_tokens=9, decode_s=0.0),  # one burst
        Sample("m", "a", Outcome.TIMEOUT, None, NOW - 5, censored_at_s=3.0),
    ]
    assert throughput_of(others) is None
    t = throughput_of([*others, decoded(40.0)])
    assert t is not None and t.n == 1 and t.p50 == t.p99 == 40.0


def test_the_score_carries_throughput_and_ttft_p75() -> None:
    window = [replace(decoded(50.0 + k), ttft_s=0.1 * (k + 1)) for k in range(20)]
    score = compute_score(PAIR, window, ModelPolicy().window_params(), NOW)
    assert score.throughput is not None and score.throughput.n == 20
    assert score.p75 == 1.5 and score.median is not None and score.median <= score.p75
    row = score.to_dict(NOW)
    assert row["p75_s"] == 1.5 and row["throughput"]["n"] == 20
    assert compute_score(PAIR, [], ModelPolicy().window_params(), NOW).throughput is None


# -- measured per attempt ------------------------------------------------------------------


def test_the_clock_counts_output_events_and_prefers_reported_usage() -> None:
    clock = AttemptClock()
    clock.first_token()
    answer = clock.tally(ROLE + TOKEN, CHAT)
    answer.note(TOKEN * 3)  # three events in one read
    answer.note(TOKEN)
    answer.note(FINISH + b"data: [DONE]\n\n")
    tokens, decode_s = clock.decode()
    assert tokens == 5 and decode_s is not None and decode_s >= 0.0  # role, finish: no output
    sample = clock.sample("m", "a", Outcome.OK)
    assert (sample.output_tokens, sample.decode_s) == (5, decode_s)
    answer.note(USAGE)
    assert clock.decode()[0] == 42  # the provider's own count wins over the estimate


def test_closing_events_in_reads_of_their_own_are_not_counted() -> None:
    clock = AttemptClock()
    clock.first_token()
    answer = clock.tally(TOKEN, CHAT)
    for _ in range(6):
        answer.note(TOKEN)
    answer.note(FINISH)
    answer.note(b"data: [DONE]\n\n")
    tokens, decode_s = clock.decode()
    assert tokens == 7 and decode_s is not None
    whole = AttemptClock()
    whole.first_token()
    whole.tally(ROLE + TOKEN + TOKEN + FINISH + USAGE, CHAT)  # the whole answer at once
    assert whole.decode() == (42, 0.0)  # its usage; no time to measure a rate over


def test_only_a_successful_attempt_measures_throughput() -> None:
    clock = AttemptClock()
    clock.first_token()
    clock.tally(TOKEN, CHAT).note(TOKEN * 5)
    for outcome in (Outcome.STREAM_ERROR, Outcome.CANCELLED):
        sample = clock.sample("m", "a", outcome)
        assert sample.output_tokens is None and sample.decode_s is None
    assert AttemptClock().decode() == (None, None)  # no first token


def test_content_that_mentions_an_output_key_is_not_counted() -> None:
    tricky = b'data: {"choices":[{"delta":{"content":"say \\"content\\":\\"x\\""}}]}\n\n'
    assert CHAT.count_output(tricky) == 1
    assert CHAT.count_output(b'data: {"choices":[{"delta":{"content":""}}]}\n\n') == 0
    delta = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    done = b'data: {"type":"response.output_text.done","text":"hi there"}\n\n'
    assert RESPONSES.count_output(delta + b'"delta":"hi"}\n\n' + done) == 1


# -- the Redis member format -------------------------------------------------------------


def test_redis_members_carry_the_new_fields_and_old_members_still_decode() -> None:
    sample = replace(decoded(25.0, tokens=51), replica="r1", prompt_tokens=300)
    (back,) = unpack_samples(PAIR, [pack_sample(sample)])
    assert back == replace(sample, decode_s=round(2.0, 6))
    old = orjson.dumps([NOW, "ok", 0.3, 0.2, 1.0, None, "passive", 12, "r0"])
    (before,) = unpack_samples(PAIR, [old])
    assert before.output_tokens is None and before.decode_s is None and before.ttft_s == 0.3
    plain = Sample("m", "a", Outcome.OK, 0.3, NOW, 0.2, 1.0, replica="r0", prompt_tokens=12)
    assert pack_sample(plain) == old  # a sample without them packs as before


# -- the expected total time -------------------------------------------------------------


def test_expected_total_is_ttft_plus_output_over_throughput() -> None:
    score = replace(empty_score(PAIR), n=10, median=0.5,
                    throughput=Throughput(10, 100.0, 90.0, 80.0, 50.0, 201.0))  # fmt: skip
    assert expected_total_s(score, 101) == 0.5 + 100 / 100.0  # the request's max_tokens
    assert expected_total_s(score) == 0.5 + 200 / 100.0  # the pair's typical answer
    assert expected_total_s(empty_score(PAIR), 100) is None  # nothing measured
    assert predicted_ttft_s(score, prompt_tokens=5000) == 0.5  # no prefill line: the median


# -- the figures published per pair (learning.published) ----------------------------------


def test_published_spans_cover_5_minutes_30_minutes_and_a_day() -> None:
    window = [
        *(replace(decoded(100.0, age_s=60.0 + k), ttft_s=0.1) for k in range(3)),  # 1 min ago
        Sample("m", "a", Outcome.HTTP_5XX, None, NOW - 120),  # an error, 2 min ago
        *(replace(decoded(10.0, age_s=600.0 + k), ttft_s=0.5) for k in range(4)),  # 10 min ago
        *(replace(decoded(1.0, age_s=7200.0 + k), ttft_s=2.0) for k in range(8)),  # 2 h ago
        replace(decoded(1.0, age_s=2 * 86400.0), ttft_s=9.0),  # older than a day: never counted
    ]
    five, thirty, day = published(PAIR, window, ModelPolicy().window_params(), NOW)
    assert [s.name for s in (five, thirty, day)] == ["5m", "30m", "1d"]
    assert [s.n_attempts for s in (five, thirty, day)] == [4, 8, 16]
    assert five.uptime == 75.0 and thirty.uptime == 87.5 and day.uptime == 100 * 15 / 16
    assert five.latency == {"p50": 0.1, "p75": 0.1, "p90": 0.1, "p99": 0.1}
    assert thirty.latency is not None and thirty.latency["p90"] == 0.5
    assert five.throughput is not None and five.throughput["p50"] == 100.0
    assert day.throughput is not None and day.throughput["p50"] == 1.0  # 8 of 15 at 1 tok/s
    assert day.since == NOW - 7207.0 and five.since == NOW - 120
    fields = openrouter_fields([five, thirty, day])
    assert fields["uptime_last_5m"] == 75.0 and fields["latency_last_30m"] == thirty.latency
    empty = published(PAIR, [], ModelPolicy().window_params(), NOW)[0]
    assert (empty.uptime, empty.latency, empty.throughput, empty.since) == (None, None, None, None)
