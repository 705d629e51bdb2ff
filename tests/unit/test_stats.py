from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.domain import Outcome, Pair, Sample, Source
from proxy.learning.stats import compute_score, cv_band, km_quantiles, score_model
from proxy.settings.policy import ModelPolicy, WindowParams

PAIR = Pair("m", "p")
NOW = 1_000_000.0


def ok(ttft: float, t: float = NOW - 1) -> Sample:
    return Sample("m", "p", Outcome.OK, ttft, t)


def censored(at: float, t: float = NOW - 1) -> Sample:
    return Sample("m", "p", Outcome.TIMEOUT, None, t, censored_at_s=at)


def failed(t: float = NOW - 1) -> Sample:
    return Sample("m", "p", Outcome.HTTP_5XX, None, t)


def test_uncensored_quantiles_match_numpy_inverted_cdf() -> None:
    values = [0.1 * i for i in range(1, 101)]
    score = compute_score(PAIR, [ok(v) for v in values], WindowParams(), NOW)
    expected = np.quantile(values, [0.5, 0.95], method="inverted_cdf")
    assert (score.median, score.p95) == (expected[0], expected[1])
    assert score.n == 100 and score.is_proven


def test_tail_mean_is_mean_of_slowest_share() -> None:
    values = [1.0] * 95 + [10.0] * 4 + [30.0]
    score = compute_score(PAIR, [ok(v) for v in values], WindowParams(), NOW)
    assert score.tail_mean is not None and abs(score.tail_mean - (40 + 30) / 5) < 1e-9


def test_km_with_no_censoring_equals_empirical() -> None:
    times = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    observed = np.ones(5, dtype=bool)
    assert km_quantiles(times, observed, [0.5, 0.9]) == [3.0, 5.0]


def test_cv_is_std_over_mean_and_robust_measures_beside_it() -> None:
    values = [1.0] * 19 + [20.0]
    score = compute_score(PAIR, [ok(v) for v in values], WindowParams(), NOW)
    mean, std = np.mean(values), np.std(values, ddof=1)
    assert score.cv is not None and abs(score.cv - std / mean) < 1e-12
    assert score.std_over_median is not None and abs(score.std_over_median - std / 1.0) < 1e-12
    assert score.cold_share == 1 / 20
    assert cv_band(score.cv, 0.3, 1.0) == "cold-start-prone"


def test_errors_count_in_error_rate_not_latency() -> None:
    samples = [ok(0.5)] * 8 + [failed(), failed()]
    score = compute_score(PAIR, samples, WindowParams(min_samples=5), NOW)
    assert score.n == 8 and score.n_attempts == 10
    assert score.error_rate == 0.2
    assert score.consecutive_errors == 2


def test_window_bounded_by_count_and_age() -> None:
    old = [ok(9.0, t=NOW - 7200) for _ in range(50)]
    new = [ok(0.5, t=NOW - 10 + i * 0.01) for i in range(300)]
    score = compute_score(PAIR, old + new, WindowParams(max_samples=200, max_age_s=3600), NOW)
    assert score.n == 200 and score.p99 == 0.5


def test_tail_all_censored_reports_lower_bound() -> None:
    samples = [ok(0.2)] * 10 + [censored(5.0)] * 10
    score = compute_score(PAIR, samples, WindowParams(min_samples=5), NOW)
    assert score.p95 == 5.0 and score.n_censored == 10


latencies = st.lists(st.floats(0.01, 60.0), min_size=2, max_size=60)


@settings(max_examples=200, deadline=None)
@given(observed=latencies, cuts=st.lists(st.floats(0.01, 60.0), min_size=1, max_size=20))
def test_censored_samples_never_make_a_pair_look_faster(
    observed: list[float], cuts: list[float]
) -> None:
    params = WindowParams(max_samples=1000, min_samples=1)
    without = compute_score(PAIR, [ok(v) for v in observed], params, NOW)
    with_cut = compute_score(
        PAIR, [ok(v) for v in observed] + [censored(c) for c in cuts], params, NOW
    )
    for q in ("median", "p90", "p95", "p99", "tail_mean"):
        assert getattr(with_cut, q) >= getattr(without, q) - 1e-9, q


@settings(max_examples=200, deadline=None)
@given(observed=latencies, cuts=st.lists(st.floats(0.01, 60.0), min_size=1, max_size=20))
def test_km_is_at_least_as_slow_as_counting_at_the_censoring_time(
    observed: list[float], cuts: list[float]
) -> None:
    params = WindowParams(max_samples=1000, min_samples=1)
    km = compute_score(PAIR, [ok(v) for v in observed] + [censored(c) for c in cuts], params, NOW)
    counted = compute_score(PAIR, [ok(v) for v in observed + cuts], params, NOW)
    for q in ("median", "p90", "p95", "p99", "tail_mean"):
        assert getattr(km, q) >= getattr(counted, q) - 1e-9, q


def test_steered_samples_count_a_tenth_and_a_steered_window_scores() -> None:
    """Requests the client's own controls placed (Source.STEERED) may be chosen to make a
    pair look slow: two slow steered samples among forty fast (5%, enough to own the
    slowest 5% the tail mean is made of) move the pair's objective far less than two slow
    routed ones; at weight 0 they are out of the belief, without error."""
    now = 10_000.0
    pair, other = Pair("m", "a"), Pair("m", "b")

    def window(source: Source) -> list[Sample]:
        fast = [Sample("m", "a", Outcome.OK, 0.3, now - 100 + i) for i in range(40)]
        slow = [Sample("m", "a", Outcome.OK, 8.0, now - 50 + i, source=source) for i in range(2)]
        return fast + slow

    ref = [Sample("m", "b", Outcome.OK, 0.5, now - 100 + i) for i in range(40)]
    params = ModelPolicy().window_params()
    routed = score_model({pair: window(Source.PASSIVE), other: ref}, params, now, 3)[pair]
    steered = score_model({pair: window(Source.STEERED), other: ref}, params, now, 3)[pair]
    assert routed.belief is not None and steered.belief is not None
    assert steered.n_steered == 2 and steered.n_passive == 40
    assert routed.belief.estimate > 5.0 and steered.belief.estimate < 2.0
    zero = replace(params, steered_weight=0.0, prior_weight=0.0)
    only = [Sample("m", "a", Outcome.OK, 8.0, now - 5, source=Source.STEERED)] * 5
    scored = score_model({pair: only, other: ref}, zero, now, 3)[pair]
    assert scored.n == 5 and scored.n_steered == 5
