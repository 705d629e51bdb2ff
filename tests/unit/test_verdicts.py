"""Verdicts (metrics.verdict_of) from real rankings: each routing path names its verdict
(Ranking.verdict), and the decision's follows it unless a hedge or failover happened."""

from __future__ import annotations

import random
from typing import Any

from proxy.core.domain import Attempt, Decision, HedgeRecord, Outcome, Pair, Sample, Score
from proxy.learning.stats import score_model
from proxy.routing.circuit import CircuitState
from proxy.routing.ranking import ModelView, Ranking, rank
from proxy.settings.policy import ModelPolicy, WindowParams
from proxy.telemetry.metrics import VERDICTS, Metrics, verdict_of

NOW = 1_000_000.0
DEPLOYMENTS = [("a", "model-a"), ("b", "model-b")]


def scores(**values: list[float]) -> dict[Pair, Score]:
    """As the scoreboard makes them: with their posteriors."""
    windows = {
        Pair("m", provider): [Sample("m", provider, Outcome.OK, t, NOW - 10) for t in times]
        for provider, times in values.items()
    }
    return score_model(windows, WindowParams(), NOW, 1)


def ranking(board: dict[Pair, Score], seed: int = 3, **kw: Any) -> Ranking:
    policy = ModelPolicy.model_validate({"exploration_share": 0.0, **kw.pop("policy", {})})
    view = ModelView(
        policy,
        "m",
        dict(DEPLOYMENTS),
        board,
        NOW,
        incumbent=kw.get("incumbent"),
        circuits=kw.get("circuits") or {},
    )
    return rank(view, random.Random(seed))  # fmt: skip


def verdict(r: Ranking, attempts: int = 1) -> str:
    decision = Decision("d1", "m", NOW, r.ranked, r.excluded, r.reason, verdict=r.verdict)
    decision.attempts = [Attempt(c.provider, Outcome.OK) for c in r.ranked[:attempts]]
    return verdict_of(decision)


PROVEN = {"a": [0.3] * 25, "b": [0.5] * 25}


def test_each_verdict_from_a_real_ranking() -> None:
    assert verdict(ranking(scores(**PROVEN))) == "best"
    assert verdict(ranking(scores(a=[0.5] * 25, b=[0.48] * 25), incumbent="a")) == "holding"
    assert verdict(ranking({})) == "measuring"  # nothing of the model measured yet
    uncertain = scores(a=[0.3 + 0.01 * (i % 5) for i in range(25)])  # b: never measured
    draws = [ranking(uncertain, seed, policy={"exploration_share": 1.0}) for seed in range(50)]
    exploring = next(r for r in draws if r.is_exploration)
    assert verdict(exploring) == "exploring"
    weighted = ranking(scores(**PROVEN), policy={"mode": "weighted"})
    assert verdict(weighted) == "weighted"
    assert verdict(ranking(scores(**PROVEN)), attempts=2) == "failover"
    hedged = ranking(scores(**PROVEN))
    decision = Decision("d2", "m", NOW, hedged.ranked, hedged.excluded, hedged.reason)
    decision.attempts = [Attempt("a", Outcome.CANCELLED), Attempt("b", Outcome.OK, hedge=True)]
    decision.hedge = HedgeRecord(primary="a", after_s=0.5, basis="p95", fired=True, winner="b")
    assert verdict_of(decision) == "hedged"
    out = {Pair("m", p): CircuitState(failures=5, open_until=NOW + 30) for p in ("a", "b")}
    assert verdict(ranking(scores(**PROVEN), circuits=out)) == "trial"
    excluded = ranking(scores(**PROVEN), policy={"exclude": ["a", "b"]})
    assert not excluded.ranked and verdict(excluded) == "unavailable"


def test_count_decision_sets_the_verdict_and_labels_the_server() -> None:
    metrics = Metrics()
    r = ranking(scores(**PROVEN))
    decision = Decision("d1", "m", NOW, r.ranked, r.excluded, r.reason)
    decision.attempts = [Attempt("a", Outcome.HTTP_5XX), Attempt("b", Outcome.OK)]
    decision.winner = "b"
    metrics.count_decision(decision)
    assert decision.verdict == "failover" and decision.to_dict(NOW)["verdict"] == "failover"
    value = metrics.registry.get_sample_value(
        "ttft_router_decisions_total", {"model": "m", "provider": "b", "verdict": "failover"}
    )
    assert value == 1.0
    assert set(VERDICTS) >= {"best", "holding", "exploring", "failover"}
