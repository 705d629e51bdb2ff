"""TTFT against the prompt's size (learning.prefill): the fit recovers a pair's base and
prefill rate through noise and cold starts; pairs are compared at the request's size, so
opposite prefill rates send short and long prompts to different providers; and a pair
measured only on short prompts is not preferred for a long one over a pair measured there.
Seeded synthetic samples through the real scoring and ranking."""

from __future__ import annotations

import random

import numpy as np
import pytest

from proxy.core.domain import Outcome, Pair, Sample, Score
from proxy.learning import prefill
from proxy.learning.stats import score_model
from proxy.routing.ranking import ModelView, rank
from proxy.settings.policy import ModelPolicy

NOW = 1_000_000.0
POLICY = ModelPolicy(exploration_share=0.0)  # the order by estimate: a deterministic choice


def sized(
    provider: str, base: float, s_per_token: float, sizes: list[int], seed: int,
    cold_share: float = 0.0,
) -> list[Sample]:  # fmt: skip
    """Samples 5 s apart: base + prefill x size, lognormal noise, cold starts (20 s)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, tokens in enumerate(sizes):
        ttft = (base + s_per_token * tokens) * float(np.exp(0.15 * rng.standard_normal()))
        if rng.random() < cold_share:
            ttft = 20.0 * float(np.exp(0.3 * rng.standard_normal()))
        ts = NOW - 5 * (len(sizes) - i)
        out.append(Sample("m", provider, Outcome.OK, ttft, ts, prompt_tokens=tokens))
    return out


def mixed_sizes(n: int, seed: int) -> list[int]:
    """60% short prompts (30-400 tokens), 40% long ones (3,000-20,000)."""
    rng = random.Random(seed)
    return [rng.randint(30, 400) if rng.random() < 0.6 else rng.randint(3000, 20000)
            for _ in range(n)]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_the_fit_recovers_base_and_prefill_rate_through_cold_starts(seed: int) -> None:
    samples = sized("p", 0.3, 1 / 20000, mixed_sizes(150, seed), seed, cold_share=0.1)
    scores = score_model({Pair("m", "p"): samples}, POLICY.window_params(), NOW, seed)
    fitted = scores[Pair("m", "p")].prefill
    assert fitted is not None and fitted.identified
    assert fitted.s_per_token == pytest.approx(1 / 20000, rel=0.15)
    assert fitted.base_s == pytest.approx(0.3, abs=0.06)


def test_one_size_leaves_the_rate_unknown_and_the_model_prior_in_its_place() -> None:
    short = sized("p", 0.3, 1 / 20000, [50] * 60, 1)
    scores = score_model({Pair("m", "p"): short}, POLICY.window_params(), NOW, 1)
    fitted = scores[Pair("m", "p")].prefill
    assert fitted is not None and not fitted.identified
    assert fitted.s_per_token == pytest.approx(1 / POLICY.prefill.prior_tokens_per_s)


def board(**windows: list[Sample]) -> dict[Pair, Score]:
    full = {Pair("m", p): w for p, w in windows.items()}
    return score_model(full, POLICY.window_params(), NOW, 7)


def first(scores: dict[Pair, Score], prompt_tokens: int) -> tuple[str, str]:
    pairs = {p: p for _, p in scores}
    view = ModelView(POLICY, "m", pairs, scores, NOW, prompt_tokens=prompt_tokens)
    ranking = rank(view, random.Random(1))
    return ranking.ranked[0].provider, str(ranking.reason)


@pytest.mark.parametrize("seed", range(3))
def test_opposite_prefill_rates_send_short_and_long_prompts_to_different_providers(
    seed: int,
) -> None:
    """`quick` has the fastest first byte and a slow prefill (5k tokens/s); `bulk` is slower
    to start and fast at prefill (50k tokens/s): quick for 200 tokens, bulk for 12k."""
    scores = board(
        quick=sized("quick", 0.1, 1 / 5000, mixed_sizes(150, seed), seed),
        bulk=sized("bulk", 0.4, 1 / 50000, mixed_sizes(150, seed + 10), seed + 10),
    )
    assert first(scores, 200)[0] == "quick"
    provider, reason = first(scores, 12000)
    assert provider == "bulk"
    assert reason.startswith("for 12k prompt tokens: bulk has the lowest estimated")


def test_a_pair_measured_only_on_short_prompts_is_not_preferred_for_a_long_one() -> None:
    """`probed` has only short probes: its base is the fastest, its rate unknown. `served`
    has short and long prompts. For a long prompt the router does not bet on the unknown
    (it is not preferred blindly); for a short one the measured base wins."""
    scores = board(
        probed=sized("probed", 0.1, 1 / 5000, [40] * 60, 1),
        served=sized("served", 0.3, 1 / 20000, mixed_sizes(150, 2), 2),
    )
    assert first(scores, 100)[0] == "probed"
    assert first(scores, 12000)[0] == "served"
    long = prefill.size_class(12000)
    belief = scores[Pair("m", "probed")].belief_for(long)
    assert belief is not None and belief.n_eff == 0.0  # only the model's prior there


def test_a_few_long_probes_among_short_samples_fix_the_rate() -> None:
    """30 short gap probes an hour and 2 long ones: after two hours the rate is known (the
    prober stops asking for long probes once it is)."""
    sizes = ([40] * 15 + [4000]) * 4  # 4 long among 64
    samples = sized("p", 0.3, 1 / 20000, sizes, 3)
    scores = score_model({Pair("m", "p"): samples}, POLICY.window_params(), NOW, 3)
    fitted = scores[Pair("m", "p")].prefill
    assert fitted is not None and fitted.identified
    assert fitted.s_per_token == pytest.approx(1 / 20000, rel=0.3)


def test_a_slow_prefill_pairs_long_probes_are_not_taken_for_cold_starts() -> None:
    """At 2,000 prompt tokens/s a 4,000-token probe takes 2.3 s, past 4x the short samples'
    median and the 2 s floor: with one threshold for every size those probes were dropped
    as cold starts and the rate was never found (so long probes went on for ever)."""
    sizes = ([40] * 15 + [4000]) * 4
    samples = sized("p", 0.3, 1 / 2000, sizes, 3)
    scores = score_model({Pair("m", "p"): samples}, POLICY.window_params(), NOW, 3)
    fitted = scores[Pair("m", "p")].prefill
    assert fitted is not None and fitted.identified
    assert fitted.s_per_token == pytest.approx(1 / 2000, rel=0.3)
