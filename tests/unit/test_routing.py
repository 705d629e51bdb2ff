from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.core.domain import Decision, Outcome, Pair, Sample, Score
from proxy.learning.stats import score_model
from proxy.routing import AttemptEnded, AttemptStarted, FirstToken, Plan, RouteRequest, Routing
from proxy.routing.advice import evidence_wanted, out_of_contention
from proxy.routing.circuit import CircuitState
from proxy.routing.ranking import ModelView, Ranking, rank
from proxy.routing.steering import Controls
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet
from proxy.settings.pricing import PairPrice

NOW = 1_000_000.0
PAIRS = {"a": "model-a", "b": "model-b", "c": "model-c"}


def view(pol: ModelPolicy, scores: Mapping[Pair, Score], now: float = NOW, **kw: Any) -> ModelView:
    return ModelView(
        pol, "m", kw.get("pairs", PAIRS), scores, now, incumbent=kw.get("incumbent"),
        rate_limited_until=kw.get("limits", {}), circuits=kw.get("circuits") or {},
    )  # fmt: skip


@dataclass
class Board:
    """The scoreboard as routing sees it: a snapshot, swapped whole."""

    snapshot: Mapping[Pair, Score] = field(default_factory=dict)


class NoPrices:
    def for_model(self, model: str) -> Mapping[str, PairPrice]:
        return {}


class Router:
    """A routing component over a board and a policy the test can swap."""

    def __init__(self, pol: ModelPolicy, seed: int = 0) -> None:
        self.board = Board()
        self.policies = PolicyHolder([], initial=PolicySet(default=pol))
        self.routing = Routing(
            self.policies, self.board, {"m": PAIRS}, NoPrices(), rng=random.Random(seed)
        )

    def route(
        self, scores: Mapping[Pair, Score], now: float = NOW, pol: ModelPolicy | None = None
    ) -> Ranking:
        """The ranking of one request (a Plan's lists, as the Ranking it was made from)."""
        self.board.snapshot = scores
        if pol is not None:
            self.policies.current = PolicySet(default=pol)
        plan = self.routing.plan(RouteRequest("m", now))
        return Ranking(plan.ranked, plan.excluded, plan.reason, verdict=plan.verdict)

    def plan(self, scores: Mapping[Pair, Score], now: float = NOW) -> Plan:
        self.board.snapshot = scores
        return self.routing.plan(RouteRequest("m", now))


def samples(provider: str, values: list[float], age_s: float = 10.0) -> list[Sample]:
    return [Sample("m", provider, Outcome.OK, v, NOW - age_s) for v in values]


def censored(provider: str, at: float, count: int, outcome: Outcome) -> list[Sample]:
    return [Sample("m", provider, outcome, None, NOW - 5, censored_at_s=at)] * count


def board(
    pol: ModelPolicy | None = None, seed: int = 1, **windows: list[Sample] | list[float]
) -> dict[Pair, Score]:
    """Scores as the scoreboard makes them (with their posteriors), from windows given as
    samples or as TTFTs measured 10 s ago."""
    full = {
        Pair("m", p): samples(p, w) if w and isinstance(w[0], float) else w  # type: ignore[arg-type]
        for p, w in windows.items()
    }
    return score_model(full, (pol or ModelPolicy()).window_params(), NOW, seed)  # type: ignore[arg-type]


def policy(**kw: object) -> ModelPolicy:
    return ModelPolicy.model_validate(kw)


def exploit(**kw: object) -> ModelPolicy:
    """No posterior draw: the order by estimate (a deterministic choice)."""
    return policy(exploration_share=0.0, **kw)


def ranked(pol: ModelPolicy, scores: dict[Pair, Score], **kw: Any) -> list[str]:
    r = rank(view(pol, scores, **kw), random.Random(1))
    return [c.provider for c in r.ranked]


def firsts(
    pol: ModelPolicy, scores: dict[Pair, Score], count: int = 2000, **kw: object
) -> Counter[str]:
    rng = random.Random(7)
    out: Counter[str] = Counter()
    standing = view(pol, scores)
    for _ in range(count):
        r = rank(standing, rng, **kw)
        out[r.ranked[0].provider] += 1
    return out


def mixed(values: list[float], seed: int = 0) -> list[float]:
    """`values` in a random order: a window whose slow samples come and go, as a
    stationary pair's do (appended at the end, they would read as a change: learning.change)."""
    out = list(values)
    random.Random(seed).shuffle(out)
    return out


def tight(median: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median * rng.lognormvariate(0, 0.15) for _ in range(n)]


def test_fifteen_tight_samples_beat_twenty_one_with_a_cold_tail_and_reason_says_how_sure() -> None:
    # The lock-in of issue 11: c reached min_samples first, but its window shows cold starts.
    a = tight(0.05, 15, 1)
    c = [*tight(0.7, 19, 2), 7.0, 6.5]
    for seed in range(5):
        scores = board(seed=seed, a=a, c=c)
        assert ranked(exploit(), scores)[0] == "a"
        share = firsts(policy(), scores)
        # c's cold tail is plain after 21 samples; b, never measured, gets a fair look
        assert share["a"] > 1.2 * share["b"] and share["c"] < 0.03 * 2000, share
    r = rank(view(exploit(), board(a=a, c=c)), random.Random(0))
    reason = str(r.reason)
    assert reason.startswith("a has the lowest estimated tail mean (slowest 5%)")
    assert "a: tail mean (slowest 5%) " in reason and "90% range" in reason
    assert "n=15 (unproven, below 20" in reason and "n=21 (proven" in reason
    assert "b: not measured" in reason


def test_small_n_can_reveal_a_tail_and_fifteen_lucky_samples_are_not_blindly_trusted() -> None:
    scores = board(
        a=tight(0.3, 15, 1), b=[*tight(0.3, 14, 2), 8.0], c=mixed(tight(0.5, 100, 3) + [8.0] * 5)
    )
    a, b = scores[Pair("m", "a")].belief, scores[Pair("m", "b")].belief
    assert a is not None and b is not None
    assert b.estimate > 3 * a.estimate  # one cold start in 15 shows
    # the model's cold starts stay plausible for a: its range reaches far above its samples
    assert a.high > 1.5 * max(tight(0.3, 15, 1))


def test_a_censored_or_cancelled_slow_attempt_never_makes_a_pair_rank_better() -> None:
    base = tight(0.4, 30, 1)
    rival = tight(0.45, 30, 2)
    for outcome in (Outcome.TIMEOUT, Outcome.CANCELLED):
        for at in (0.6, 2.0, 30.0):
            for seed in range(4):
                plain = board(seed=seed, a=samples("a", base), b=rival)
                cut = board(
                    seed=seed, a=samples("a", base) + censored("a", at, 3, outcome), b=rival
                )
                before, after = plain[Pair("m", "a")].belief, cut[Pair("m", "a")].belief
                assert before is not None and after is not None
                assert after.estimate >= before.estimate * 0.97, (outcome, at, before, after)
                assert after.low >= before.low * 0.97
                wins_before = firsts(policy(), plain, 500)["a"]
                wins_after = firsts(policy(), cut, 500)["a"]
                assert wins_after <= wins_before + 25, (outcome, at, wins_before, wins_after)
    # and a slow censoring counts at least at its time: 3 cut-offs at 30 s in 33 is a tail
    slow = board(a=samples("a", base) + censored("a", 30.0, 3, Outcome.TIMEOUT), b=rival)
    assert ranked(exploit(), slow)[0] == "b"


def test_an_unmeasured_pair_is_neither_starved_nor_preferred_blindly() -> None:
    scores = board(a=tight(0.3, 60, 1), b=mixed(tight(0.6, 60, 2) + [6.0] * 4))  # c: never measured
    assert Pair("m", "c") not in scores
    assert ranked(exploit(), scores) == ["a", "b", "c"]  # the choice is never a blind one
    share = firsts(policy(), scores)
    assert 0.01 * 2000 < share["c"] < 0.5 * 2000, share  # but it is explored
    assert share["a"] > share["c"]
    wanted = evidence_wanted(view(policy(), scores))
    assert wanted[0].provider == "c" and wanted[0].reason == "not measured yet"
    # thin and plausibly the best (in >= 10% of draws; the burst of a new pair measures it
    # to probe.burst_min samples whatever its chance)
    thin = board(a=tight(0.3, 60, 1), b=tight(0.27, 3, 2), c=tight(0.9, 60, 3))
    reasons = {w.provider: w.reason for w in evidence_wanted(view(policy(), thin))}
    assert list(reasons) == ["b"] and reasons["b"].startswith("plausibly the best on thin")


def test_nothing_measured_spreads_a_burst_by_pending_attempts() -> None:
    router = Router(policy())
    counts: Counter[str] = Counter()
    for _ in range(9):  # one scoreboard refresh: nothing measured, all nine in flight
        first = router.route({}).ranked[0].provider
        router.routing.observe(AttemptStarted(Pair("m", first)))
        counts[first] += 1
    assert counts == {"a": 3, "b": 3, "c": 3}


def test_pending_attempts_shrink_an_uncertain_pairs_exploration() -> None:
    # b is likely worse (3 samples a little slower) and wins only through its wide range
    scores = board(a=tight(0.3, 80, 1), b=tight(0.3, 3, 2))
    alone = firsts(policy(), scores)["b"]
    assert alone > 50
    pending = {Pair("m", "b"): 20}
    assert firsts(policy(), scores, pending=pending)["b"] < alone * 0.8


def test_exploration_stops_when_a_pair_is_clearly_worse_and_the_ranking_is_reused() -> None:
    scores = board(
        a=tight(0.3, 150, 1),
        b=mixed(tight(3.0, 150, 2) + [9.0] * 8),
        c=mixed(tight(6, 150, 3) + [20.0] * 8),
    )
    share = firsts(policy(), scores)
    assert share["a"] == 2000, share
    pol = policy()
    router = Router(pol)
    router.plan(scores)
    first = router.plan(scores)
    assert router.plan(scores, NOW + 60) is first  # steady: the very same plan, reused
    assert evidence_wanted(view(pol, scores, incumbent="a")) == []
    # one provider: nothing to decide, so nothing is wanted (the prober's own schedule runs)
    assert evidence_wanted(view(pol, {}, pairs={"a": "model-a"})) == []


def test_aged_evidence_widens_and_is_wanted_again() -> None:
    values = tight(0.4, 30, 1)
    rival = samples("b", tight(0.5, 60, 2))
    fresh = board(a=samples("a", values, age_s=1), b=rival)
    old = board(a=samples("a", values, age_s=3000), b=rival)  # five half-lives
    f, o = fresh[Pair("m", "a")].belief, old[Pair("m", "a")].belief
    assert f is not None and o is not None
    assert o.n_eff < f.n_eff / 20
    assert o.high - o.low > 2 * (f.high - f.low)
    wanted = {w.provider: w.reason for w in evidence_wanted(view(policy(), old))}
    assert wanted["a"].startswith("evidence aged")


def test_probed_models_explore_with_user_requests_much_less() -> None:
    scores = board(a=tight(0.3, 60, 1), b=tight(0.28, 5, 2))  # c: never measured
    free = 2000 - firsts(policy(), scores)["a"]
    probed = 2000 - firsts(policy(), scores, probed=True)["a"]
    assert free > 300 and probed < free * 0.3, (free, probed)


def test_hysteresis_holds_incumbent_within_margin() -> None:
    scores = board(a=[1.00] * 60, b=[0.95] * 60, c=[2.0] * 60)
    assert ranked(exploit(), scores, incumbent="a")[0] == "a"
    assert ranked(exploit(), scores, incumbent=None)[0] == "b"
    scores = board(a=[1.00] * 60, b=[0.80] * 60, c=[2.0] * 60)
    assert ranked(exploit(), scores, incumbent="a")[0] == "b"


def test_filters_exclude_circuit_and_rate_limit_with_reasons() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.7] * 30)
    circuits = {Pair("m", "a"): CircuitState(5, NOW + 20, trial_in_flight=True)}
    limits = {Pair("m", "b"): NOW + 10}
    r = rank(
        view(exploit(exclude=["c"]), scores, limits=limits, circuits=circuits), random.Random(0)
    )
    assert r.ranked == ()
    reasons = {c.provider: c.excluded_because for c in r.excluded}
    assert reasons["c"] == "excluded by policy"
    assert reasons["b"] is not None and reasons["b"].startswith("rate-limited")
    assert reasons["a"] is not None and reasons["a"].startswith("circuit half-open")
    assert "no provider available" in str(r.reason)


def test_an_open_circuit_excludes_until_its_cooldown_then_admits_a_trial() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.7] * 30)
    circuits = {Pair("m", "a"): CircuitState(5, NOW + 20)}
    assert ranked(exploit(), scores, circuits=circuits) == ["b", "c"]
    later = {Pair("m", "a"): CircuitState(5, NOW - 1)}  # cooldown over: half-open
    assert ranked(exploit(), scores, circuits=later) == ["a", "b", "c"]


def test_when_every_circuit_is_open_the_soonest_due_pairs_go_as_trials() -> None:
    scores = board(a=[0.4] * 30, b=[0.6] * 30, c=[0.7] * 30)
    circuits = {
        Pair("m", "a"): CircuitState(5, NOW + 20),
        Pair("m", "b"): CircuitState(5, NOW + 5),
        Pair("m", "c"): CircuitState(5, NOW + 10),
    }
    assert ranked(exploit(), scores, circuits=circuits) == ["b", "c", "a"]
    # one trial request at a time: while one is in flight, nothing else goes
    circuits[Pair("m", "b")] = CircuitState(5, NOW + 5, trial_in_flight=True)
    assert ranked(exploit(), scores, circuits=circuits) == []
    # a pair out by policy or by a rate limit is never a trial
    circuits[Pair("m", "b")] = CircuitState(5, NOW + 5)
    limits = {Pair("m", "b"): NOW + 9}
    assert ranked(exploit(exclude=["a"]), scores, circuits=circuits, limits=limits) == ["c"]


def test_weighted_mode_shares_traffic_by_inverse_objective() -> None:
    scores = board(a=[1.0] * 30, b=[2.0] * 30, c=[4.0] * 30)
    router = Router(policy(mode="weighted"), 3)
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(3000):
        counts[router.route(scores).ranked[0].provider] += 1
    assert counts["a"] > counts["b"] > counts["c"] > 0


def test_router_remembers_the_leader_as_incumbent_but_not_from_dry_runs() -> None:
    router = Router(policy())
    scores = board(a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    router.board.snapshot = scores
    assert router.routing.explain("m", NOW).ranking.ranked[0].provider == "a"
    assert router.routing.incumbent("m") is None
    router.route(scores)
    assert router.routing.incumbent("m") == "a"


def test_router_reuses_a_steady_ranking_only_while_its_inputs_are_the_same() -> None:
    pol = policy(uncertainty={"prior_weight": 0})
    router = Router(pol)
    scores = board(pol, a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    router.plan(scores)  # the incumbent is set
    first = router.plan(scores)
    assert router.plan(scores, NOW + 60) is first
    # a new snapshot, a new policy object, or a rate limit: ranked again
    fresh = board(pol, a=[0.9] * 30, b=[0.6] * 30, c=[0.7] * 30)
    assert router.route(fresh).ranked[0].provider == "b"
    router.policies.current = PolicySet(default=policy(uncertainty={"prior_weight": 0}))
    assert router.plan(fresh) is not first
    again = router.plan(fresh)
    router.routing.observe(AttemptEnded(Pair("m", "b"), Outcome.RATE_LIMITED, NOW, 10.0))
    limited = router.routing.plan(RouteRequest("m", NOW))
    assert limited is not again and limited.ranked[0].provider != "b"
    # excluded by a rate limit that ends with time: never reused
    assert router.route(fresh, NOW + 20).ranked[0].provider == "b"


def test_router_never_reuses_weighted_or_uncertain_rankings() -> None:
    scores = board(a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    weighted = Router(policy(mode="weighted"))
    assert weighted.plan(scores) is not weighted.plan(scores)
    uncertain = board(a=[0.5] * 30, b=[0.6] * 3, c=[0.7] * 30)
    router = Router(policy())
    assert router.plan(uncertain) is not router.plan(uncertain)


def test_a_shared_steady_ranking_is_immutable_and_renders_its_candidates_once() -> None:
    pol = policy(uncertainty={"prior_weight": 0})
    router = Router(pol)
    scores = board(pol, a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    router.plan(scores)
    first = router.routing.plan(RouteRequest("m", NOW))
    assert router.routing.plan(RouteRequest("m", NOW)) is first
    assert isinstance(first.ranked, tuple) and isinstance(first.excluded, tuple)
    assert first.candidates is not None
    rows = first.candidates(NOW)
    assert first.candidates(NOW) is rows  # one flush: rendered once for all its decisions
    assert [r["provider"] for r in rows] == ["a", "b", "c"]
    later = first.candidates(NOW + 30)  # the next flush renders the scores' ages anew
    assert later is not rows and later[0]["score"] != rows[0]["score"]
    decision = Decision("d", "m", NOW, first.ranked, first.excluded, first.reason,
                        candidates=first.candidates)  # fmt: skip
    assert decision.to_dict(NOW + 30)["candidates"] is later


def test_a_clearly_worse_pair_is_out_of_contention_a_close_or_thin_one_is_not() -> None:
    """The prober ends a pair's burst early only when it is best in under 5% of the
    posterior draws: after `probe.burst_min` samples, fresh, not the leader."""
    pol = policy()
    scores = board(a=tight(0.3, 30, 1), b=tight(3.0, 6, 2), c=tight(0.32, 6, 3))
    assert out_of_contention(view(pol, scores)) == {"b"}  # c is close: not out
    few = board(a=tight(0.3, 30, 1), b=tight(3.0, 4, 2), c=tight(0.32, 6, 3))
    assert out_of_contention(view(pol, few)) == set()  # b: under burst_min
    aged = board(a=tight(0.3, 30, 1), b=samples("b", tight(3.0, 6, 2), age_s=3000))
    assert out_of_contention(view(pol, aged)) == set()  # b's evidence aged
    assert out_of_contention(view(pol, {})) == set()  # nothing measured
    assert out_of_contention(view(pol, scores, pairs={"a": "model-a"})) == set()  # one pair


def test_a_long_window_of_fresh_probes_is_not_aged_for_ever() -> None:
    """A pair measured by probes alone, one per 10 s for 2000 s: its 200 samples weigh far
    less than half their count under the 120 s half-life, yet its newest is 10 s old, so it
    is not "aged" (that would ask for a probe every burst spacing for ever); once nothing
    is newer than a half-life, it is."""
    pol = policy()
    rival = samples("b", tight(0.5, 60, 2), age_s=1)
    probes = [Sample("m", "a", Outcome.OK, v, NOW - 10 - 10 * k)
              for k, v in enumerate(tight(0.45, 200, 1))]  # fmt: skip
    scores = board(pol, a=probes, b=rival)
    belief = scores[Pair("m", "a")].belief
    assert belief is not None and belief.n_eff < 200 / 2
    fresh = {w.provider: w.reason for w in evidence_wanted(view(pol, scores))}
    assert not fresh.get("a", "").startswith("evidence aged"), fresh
    later = NOW + 200  # nothing new for 210 s
    stale = {w.provider: w.reason for w in evidence_wanted(view(pol, scores, later))}
    assert stale["a"].startswith("evidence aged"), stale


def test_a_pair_that_only_fails_is_not_wanted_as_unmeasured_for_ever() -> None:
    """Errors give no latency (n = 0) but are evidence: after min_samples attempts the pair
    is left to the gap schedule and its circuit breaker, not probed every burst spacing."""
    failing = [Sample("m", "c", Outcome.HTTP_5XX, None, NOW - 5)]
    few = board(a=tight(0.3, 30, 1), b=tight(0.5, 30, 2), c=failing * 3)
    many = board(a=tight(0.3, 30, 1), b=tight(0.5, 30, 2), c=failing * 20)
    assert "c" in {w.provider for w in evidence_wanted(view(policy(), few))}
    assert "c" not in {w.provider for w in evidence_wanted(view(policy(), many))}


def test_a_pair_stuck_in_a_cold_start_is_tried_last_until_it_answers() -> None:
    """An attempt in flight past its cold-start-like time: the pair is probably loading,
    so the next requests go elsewhere first; once its first token comes, it is back."""
    pol = policy(uncertainty={"prior_weight": 0}, exploration_share=0.0)
    router = Router(pol)
    scores = board(pol, a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    assert router.route(scores).ranked[0].provider == "a"
    router.routing.observe(AttemptStarted(Pair("m", "a"), token=7, slow_at=NOW + 2.0))
    assert router.route(scores, NOW + 1.0).ranked[0].provider == "a"  # not late yet
    late = router.route(scores, NOW + 3.0)
    assert [c.provider for c in late.ranked] == ["b", "c", "a"]
    assert "tried last: a (an attempt in flight past its cold-start-like time" in str(late.reason)
    router.routing.observe(FirstToken(Pair("m", "a"), token=7))
    assert router.route(scores, NOW + 4.0).ranked[0].provider == "a"


def test_a_429_keeps_a_pair_out_for_the_newest_retry_after_capped_a_clients_not_at_all() -> None:
    pol = policy(uncertainty={"prior_weight": 0}, exploration_share=0.0,
                 circuit={"max_retry_after_s": 60})  # fmt: skip
    router = Router(pol)
    scores = board(pol, a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    a = Pair("m", "a")

    def out_for() -> str:
        return next(
            c.excluded_because or "" for c in router.route(scores).excluded if c.provider == "a"
        )

    # an hour's Retry-After keeps the pair out for the cap only
    router.routing.observe(AttemptEnded(a, Outcome.RATE_LIMITED, NOW, 3600.0))
    assert out_for() == "rate-limited (429) for another 60.0 s"
    # the newest Retry-After holds, even a shorter one
    router.routing.observe(AttemptEnded(a, Outcome.RATE_LIMITED, NOW, 5.0))
    assert out_for() == "rate-limited (429) for another 5.0 s"
    assert router.route(scores, NOW + 6.0).ranked[0].provider == "a"
    # a 429 the request caused (one prompt above the provider's per-minute limit) excludes
    # nothing and counts nothing against the pair
    for _ in range(10):
        router.routing.observe(AttemptEnded(a, Outcome.RATE_LIMITED, NOW + 7.0, 60.0, True))
    assert router.route(scores, NOW + 8.0).ranked[0].provider == "a"


def test_client_caused_failures_never_open_a_circuit() -> None:
    pol = policy(uncertainty={"prior_weight": 0}, exploration_share=0.0,
                 circuit={"consecutive_errors": 3})  # fmt: skip
    router = Router(pol)
    scores = board(pol, a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    a = Pair("m", "a")
    for outcome in (Outcome.HTTP_4XX, Outcome.TIMEOUT, Outcome.HTTP_4XX, Outcome.TIMEOUT):
        router.routing.observe(AttemptEnded(a, outcome, NOW, None, True))
    assert router.route(scores).ranked[0].provider == "a"
    for _ in range(3):
        router.routing.observe(AttemptEnded(a, Outcome.TIMEOUT, NOW))
    assert router.route(scores).ranked[0].provider == "b"


def test_a_client_placed_request_is_marked_steered_an_affinity_key_is_not() -> None:
    router = Router(policy())
    router.board.snapshot = board(a=[0.5] * 30, b=[0.6] * 30, c=[0.7] * 30)
    only = Controls(only=("c",), given={"only": "body"})
    assert router.routing.plan(RouteRequest("m", NOW, only)).steered
    fallbacks = Controls(allow_fallbacks=False, given={"allow_fallbacks": "body"})
    assert not router.routing.plan(RouteRequest("m", NOW, fallbacks)).steered
    assert not router.routing.plan(RouteRequest("m", NOW)).steered
