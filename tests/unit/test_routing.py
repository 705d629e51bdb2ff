from __future__ import annotations

import random

from proxy.circuit import CircuitState
from proxy.domain import Outcome, Pair, Sample, Score
from proxy.policy import ModelPolicy
from proxy.routing import Router, rank
from proxy.stats import WindowParams, compute_score

NOW = 1_000_000.0
DEPLOYMENTS = [("a", "model-a"), ("b", "model-b"), ("c", "model-c")]


def score(provider: str, values: list[float], errors: int = 0) -> Score:
    samples = [Sample("m", provider, Outcome.OK, v, NOW - 10) for v in values]
    samples += [Sample("m", provider, Outcome.HTTP_5XX, None, NOW - 5) for _ in range(errors)]
    return compute_score(Pair("m", provider), samples, WindowParams(), NOW)


def board(**values: list[float]) -> dict[Pair, Score]:
    return {Pair("m", p): score(p, v) for p, v in values.items()}


def policy(**kw: object) -> ModelPolicy:
    return ModelPolicy.model_validate({"exploration_share": 0.0, **kw})


def ranked(policy: ModelPolicy, scores: dict[Pair, Score], **kw: object) -> list[str]:
    r = rank(
        policy,
        DEPLOYMENTS,
        scores,
        "m",
        incumbent=kw.get("incumbent"),  # type: ignore[arg-type]
        rate_limited_until=kw.get("limits", {}),
        rng=random.Random(1),
        now=NOW,
        circuits=kw.get("circuits"),
    )  # type: ignore[arg-type]
    return [c.provider for c in r.ranked]


def test_lowest_p95_among_proven_wins_and_reason_has_figures() -> None:
    scores = board(a=[0.4] * 19 + [6.0] * 2, b=[0.6] * 21, c=[0.3] * 5)
    r = rank(
        policy(objective="p95"),
        DEPLOYMENTS,
        scores,
        "m",
        incumbent=None,
        rate_limited_until={},
        rng=random.Random(0),
        now=NOW,
    )
    assert [c.provider for c in r.ranked] == ["b", "a", "c"]
    assert "b has the lowest p95 among 2 proven pairs" in r.reason
    assert "p95 0.600 s" in r.reason and "n=21" in r.reason


def test_default_objective_tail_mean_sees_rare_cold_starts_p95_misses() -> None:
    # a: 3% cold starts of 40 s (p95 stays warm); b: a wider warm spread, no cold starts.
    scores = board(a=[0.3] * 97 + [40.0] * 3, b=[0.5] * 90 + [1.2] * 10, c=[9.0] * 30)
    assert ranked(policy(objective="p95"), scores)[0] == "a"
    r = rank(
        policy(),
        DEPLOYMENTS,
        scores,
        "m",
        incumbent=None,
        rate_limited_until={},
        rng=random.Random(0),
        now=NOW,
    )
    assert r.ranked[0].provider == "b"
    assert r.reason.startswith("b has the lowest tail mean (slowest 5%) among 3 proven pairs")


def test_no_proven_pair_measures_least_measured_first() -> None:
    scores = board(a=[0.4] * 5, b=[0.6] * 2, c=[0.3] * 9)
    assert ranked(policy(), scores)[0] == "b"


def test_hysteresis_holds_incumbent_within_margin() -> None:
    scores = board(a=[1.00] * 30, b=[0.95] * 30, c=[2.0] * 30)
    assert ranked(policy(), scores, incumbent="a")[0] == "a"
    assert ranked(policy(), scores, incumbent=None)[0] == "b"
    scores = board(a=[1.00] * 30, b=[0.80] * 30, c=[2.0] * 30)
    assert ranked(policy(), scores, incumbent="a")[0] == "b"


def test_exploration_share_sends_some_requests_to_unproven() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.3] * 3)
    rng = random.Random(7)
    firsts = [
        rank(
            policy(exploration_share=0.1),
            DEPLOYMENTS,
            scores,
            "m",
            incumbent=None,
            rate_limited_until={},
            rng=rng,
            now=NOW,
        )
        .ranked[0]
        .provider
        for _ in range(2000)
    ]
    share = firsts.count("c") / len(firsts)
    assert 0.07 < share < 0.13


def test_filters_exclude_circuit_and_rate_limit_with_reasons() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.7] * 30)
    circuits = {Pair("m", "a"): CircuitState(5, NOW + 20, trial_in_flight=True)}
    r = rank(
        policy(exclude=["c"]),
        DEPLOYMENTS,
        scores,
        "m",
        incumbent=None,
        rate_limited_until={Pair("m", "b"): NOW + 10},
        rng=random.Random(0),
        now=NOW,
        circuits=circuits,
    )
    assert r.ranked == []
    reasons = {c.provider: c.excluded_because for c in r.excluded}
    assert reasons["c"] == "excluded by policy"
    assert reasons["b"] is not None and reasons["b"].startswith("rate-limited")
    assert reasons["a"] is not None and reasons["a"].startswith("circuit half-open")
    assert "no provider available" in r.reason


def test_an_open_circuit_excludes_until_its_cooldown_then_admits_a_trial() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.7] * 30)
    circuits = {Pair("m", "a"): CircuitState(5, NOW + 20)}
    assert ranked(policy(), scores, circuits=circuits) == ["b", "c"]
    later = {Pair("m", "a"): CircuitState(5, NOW - 1)}  # cooldown over: half-open
    assert ranked(policy(), scores, circuits=later) == ["a", "b", "c"]


def test_when_every_circuit_is_open_the_soonest_due_pairs_go_as_trials() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.7] * 30)
    circuits = {
        Pair("m", "a"): CircuitState(5, NOW + 20),
        Pair("m", "b"): CircuitState(5, NOW + 5),
        Pair("m", "c"): CircuitState(5, NOW + 10),
    }
    assert ranked(policy(), scores, circuits=circuits) == ["b", "c", "a"]
    # one trial request at a time: while one is in flight, nothing else goes
    circuits[Pair("m", "b")] = CircuitState(5, NOW + 5, trial_in_flight=True)
    assert ranked(policy(), scores, circuits=circuits) == []
    # a pair out by policy or by a rate limit is never a trial
    circuits[Pair("m", "b")] = CircuitState(5, NOW + 5)
    limits = {Pair("m", "b"): NOW + 9}
    assert ranked(policy(exclude=["a"]), scores, circuits=circuits, limits=limits) == ["c"]


def test_weighted_mode_shares_traffic_by_inverse_objective() -> None:
    scores = board(a=[1.0] * 30, b=[2.0] * 30, c=[4.0] * 30)
    router = Router(random.Random(3))
    pol = policy(mode="weighted")
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(3000):
        counts[router.route(pol, DEPLOYMENTS, scores, "m", NOW).ranked[0].provider] += 1
    assert counts["a"] > counts["b"] > counts["c"] > 0


def test_router_remembers_incumbent_but_not_from_dry_runs() -> None:
    router = Router(random.Random(0))
    scores = board(a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    router.route(policy(), DEPLOYMENTS, scores, "m", NOW, dry_run=True)
    assert "m" not in router.incumbents
    router.route(policy(), DEPLOYMENTS, scores, "m", NOW)
    assert router.incumbents["m"] == "a"


def test_router_reuses_a_steady_ranking_only_while_its_inputs_are_the_same() -> None:
    router = Router(random.Random(0))
    scores = board(a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    pol = policy()
    first = router.route(pol, DEPLOYMENTS, scores, "m", NOW)
    assert router.route(pol, DEPLOYMENTS, scores, "m", NOW + 60) is first
    # a new snapshot, a new policy object, or a rate limit: ranked again
    fresh = board(a=[0.9] * 30, b=[0.6] * 30, c=[0.7] * 30)
    assert router.route(pol, DEPLOYMENTS, fresh, "m", NOW).ranked[0].provider == "b"
    assert router.route(policy(), DEPLOYMENTS, fresh, "m", NOW) is not first
    again = router.route(pol, DEPLOYMENTS, fresh, "m", NOW)
    router.note_rate_limited(Pair("m", "b"), NOW + 10)
    limited = router.route(pol, DEPLOYMENTS, fresh, "m", NOW)
    assert limited is not again and limited.ranked[0].provider != "b"
    # excluded by a rate limit that ends with time: never reused
    assert router.route(pol, DEPLOYMENTS, fresh, "m", NOW + 20).ranked[0].provider == "b"


def test_router_never_reuses_weighted_or_unproven_rankings() -> None:
    router = Router(random.Random(0))
    scores = board(a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    weighted = policy(mode="weighted")
    assert router.route(weighted, DEPLOYMENTS, scores, "m", NOW) is not router.route(
        weighted, DEPLOYMENTS, scores, "m", NOW
    )
    unproven = board(a=[0.5] * 30, b=[0.6] * 3, c=[0.7] * 30)
    pol = policy(exploration_share=0.5)
    assert router.route(pol, DEPLOYMENTS, unproven, "m", NOW) is not router.route(
        pol, DEPLOYMENTS, unproven, "m", NOW
    )
