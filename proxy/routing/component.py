"""The routing component: the one owner, and the one writer, of routing state.

Routing keeps what lives between requests: the incumbent per model (hysteresis), the
rate-limit deadlines providers announced (Retry-After), the circuit breakers with the
attempts pending per pair, the affinity bindings, and the steady rankings it reuses. Nothing
else writes them. Its surface is small:

- `plan(request)`: the ranked and excluded candidates of one request, with the reason,
  shaped by its controls and the policy's steering (routing.steering);
- `observe(event)`: what happened to an attempt (started, first token, ended) or a request
  (served), reported by the recorder;
- `evidence(model, now)`: the prober's advice (routing.advice); `explain(model, now)`: the
  admin API's dry run; `incumbent(model)` and `pending(pair)`: read-only queries.

The request path reads the scoreboard's in-memory snapshot and never awaits anything here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

from proxy.core.domain import Candidate, LazyText, Outcome, Pair, Score
from proxy.learning.prefill import size_class
from proxy.routing.advice import Evidence, evidence
from proxy.routing.affinity import AffinityTable
from proxy.routing.circuit import Breakers, retry_after_s
from proxy.routing.ranking import ModelView, Ranking, Standing, is_steady, order, prepare
from proxy.routing.reasons import WinShares
from proxy.routing.steering import Controls, steer, steers
from proxy.settings.policy import ModelPolicy, PolicyHolder
from proxy.settings.pricing import PairPrice


class ScoreSource(Protocol):
    """Where the scores come from (the scoreboard): an immutable snapshot, swapped whole."""

    @property
    def snapshot(self) -> Mapping[Pair, Score]: ...


class PriceBook(Protocol):
    """The prices steering reads (settings.pricing.Pricing)."""

    def for_model(self, model: str) -> Mapping[str, PairPrice]: ...


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What routing needs of one request. `served_by`: the providers that serve its
    endpoint (None: all); the others are excluded with `unserved_reason`."""

    model: str
    now: float
    controls: Controls | None = None
    served_by: frozenset[str] | None = None
    unserved_reason: str = ""
    prompt_tokens: int = 0  # an estimate: routing compares pairs at this prompt size


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why nothing can be tried: every pair rate-limited (`rate_limited`), or out for other
    reasons; `retry_after_s` is when asking again can succeed (None: unknown)."""

    rate_limited: bool
    retry_after_s: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's route: what dispatch tries in order, what is out and why, the reason in
    words, the verdict (best, holding, exploring, ...), what shaped it besides measurements,
    the affinity key to report when served, and `blocked` when nothing can be tried.
    `candidates` renders the ranking's candidates once per flush while the lists are the
    ranking's own (routing.ranking.Ranking.candidates)."""

    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    reason: LazyText
    verdict: str
    shaped_by: list[str] | None = None
    affinity_key: str | None = None
    candidates: Callable[[float], list[dict[str, Any]]] | None = None
    blocked: Blocked | None = None
    steered: bool = False  # the client's controls placed it (routing.steering.Controls.places)


# -- events: what happened, reported to `Routing.observe` -------------------------------


class AttemptStarted(NamedTuple):
    """An attempt went out at `now` (wall clock). `slow_at`: when, without a first token by
    then, it is cold-start-like (the pair is then tried last until it answers); `token`
    names the attempt in the events that follow."""

    pair: Pair
    token: int = 0
    slow_at: float = math.inf
    now: float = 0.0


class FirstToken(NamedTuple):
    pair: Pair
    token: int = 0


class AttemptEnded(NamedTuple):
    """An attempt is over. `client_fault`: the request caused the failure (a 400 from the
    provider, a 429 for its size alone, a timeout of a long prompt: serving.failures), so
    nothing counts against the pair. `retry_after_s`: a 429's Retry-After (None: none)."""

    pair: Pair
    outcome: Outcome
    now: float
    retry_after_s: float | None = None
    client_fault: bool = False
    token: int = 0


class Served(NamedTuple):
    """A request with an affinity key was served by `provider`: bind the key to it."""

    model: str
    affinity_key: str
    provider: str
    now: float


Event = AttemptStarted | FirstToken | AttemptEnded | Served
DEFAULT_RETRY_AFTER_S = 1.0  # a 429 without Retry-After rests the pair this long


@dataclass(frozen=True, slots=True)
class Explanation:
    """The admin API's dry run of a model's route (by the estimates, without a draw)."""

    ranking: Ranking
    incumbent: str | None
    probed: bool
    evidence: Evidence


class Routing:
    def __init__(
        self,
        policies: PolicyHolder,
        scores: ScoreSource,
        pairs: Mapping[str, Mapping[str, str]],
        pricing: PriceBook,
        *,
        rng: random.Random | None = None,
        probing: bool = False,
    ) -> None:
        """`pairs`: model -> (provider -> that provider's model id), in config order.
        `probing`: a prober runs beside this router (then a model is probed unless its
        policy turns `probe.enabled` off, and user requests explore less)."""
        self._policies = policies
        self._scores = scores
        self._pairs = pairs
        self._pricing = pricing
        self._rng = rng or random.Random()
        self._probing = probing
        self._incumbents: dict[str, str] = {}
        self._rate_limited_until: dict[Pair, float] = {}
        self._rate_limits_version = 0
        self._breakers = Breakers()
        self._affinity = AffinityTable()
        self._shares = WinShares()
        self._steady: dict[tuple[str, frozenset[str] | None, int], _Steady] = {}
        self._scores_seen: Mapping[Pair, Score] | None = None
        self._evidence: dict[str, tuple[object, object, Evidence]] = {}
        # model -> provider -> attempt token -> when it turns cold-start-like (in flight)
        self._slow_at: dict[str, dict[str, dict[int, float]]] = {}

    # -- the request path -----------------------------------------------------------------

    def plan(self, request: RouteRequest) -> Plan:
        """Rank the model's pairs for this request and apply its controls."""
        model, now, controls = request.model, request.now, request.controls
        policy = self._policies.current.for_model(model)
        ranking, steady = self._rank(policy, request, draw=True)
        if controls is None and not steers(policy):
            if steady is not None and steady.ranking is ranking:
                if steady.plan is None:
                    steady.plan = self._plain(ranking, model, now)
                return steady.plan
            return self._plain(ranking, model, now)
        key = controls.affinity_key if controls is not None else None
        if key is not None and not policy.affinity.enabled:
            key = None
        bound = self._affinity.lookup(model, key, now) if key is not None else None
        steered = steer(ranking, controls, policy, self._pricing.for_model(model), bound)
        blocked = None if steered.ranked else self._blocked(model, steered.excluded, now)
        return Plan(
            steered.ranked, steered.excluded, steered.reason, ranking.verdict,
            steered.shaped_by, key, None, blocked, controls is not None and controls.places,
        )  # fmt: skip

    def observe(self, event: Event) -> None:
        """Take in what happened; the only way routing state changes from outside."""
        if type(event) is AttemptStarted:
            self._breakers.on_start(event.pair, event.now, event.token)
            if event.slow_at != math.inf:
                model, provider = event.pair
                self._slow_at.setdefault(model, {}).setdefault(provider, {})[event.token] = (
                    event.slow_at
                )
        elif type(event) is FirstToken:
            self._breakers.on_first_token(event.pair)
            self._landed(event.pair, event.token)
        elif type(event) is AttemptEnded:
            self._landed(event.pair, event.token)
            self._attempt_ended(event)
        elif type(event) is Served:
            policy = self._policies.current.for_model(event.model)
            self._affinity.bind(
                event.model, event.affinity_key, event.provider, event.now, policy.affinity
            )

    def pending(self, pair: Pair) -> int:
        """Attempts sent to `pair` whose result the scores do not hold yet."""
        return self._breakers.pending.get(pair, 0)

    # -- readers ---------------------------------------------------------------------------

    def incumbent(self, model: str) -> str | None:
        """The model's current leader (the pair the hysteresis holds), None before any."""
        return self._incumbents.get(model)

    def pairs(self, model: str) -> Mapping[str, str] | None:
        """provider -> the provider's model id, for a configured model; else None."""
        return self._pairs.get(model)

    def is_probed(self, policy: ModelPolicy) -> bool:
        """Whether the prober measures a model of this policy."""
        return self._probing and policy.probe.enabled

    def evidence(self, model: str, now: float) -> Evidence:
        """Which of the model's pairs routing wants measured, and which are settled;
        computed once per scores snapshot and policy."""
        snapshot, policy = self._scores.snapshot, self._policies.current.for_model(model)
        known = self._evidence.get(model)
        if known is not None and known[0] is snapshot and known[1] is policy:
            return known[2]
        found = evidence(self._view(policy, model, snapshot, now), self._shares)
        self._evidence[model] = (snapshot, policy, found)
        return found

    def explain(self, model: str, now: float, prompt_tokens: int = 0) -> Explanation:
        """The model's route by the estimates alone (no draw), for a prompt of
        `prompt_tokens`; changes nothing."""
        policy = self._policies.current.for_model(model)
        request = RouteRequest(model, now, prompt_tokens=prompt_tokens)
        ranking, _ = self._rank(policy, request, draw=False)
        return Explanation(
            ranking, self.incumbent(model), self.is_probed(policy), self.evidence(model, now)
        )

    # -- inside ----------------------------------------------------------------------------

    def _rank(
        self, policy: ModelPolicy, request: RouteRequest, *, draw: bool
    ) -> tuple[Ranking, _Steady | None]:
        """`rank()` with this router's state. While the scores snapshot, the policy and the
        incumbent are the very same objects and no rate limit or circuit changed, the
        model's `Standing` is kept, so a request pays its draw and a sort; a steady
        ranking (`is_steady`: every draw gives it) is returned again as it is. Without a
        draw (explain) nothing is remembered. The returned lists are shared between
        requests and must not be mutated."""
        scores = self._scores.snapshot
        if scores is not self._scores_seen:  # a new snapshot holds what has ended so far
            self._scores_seen = scores
            self._breakers.on_snapshot()
        model = request.model
        key = (model, request.served_by, size_class(request.prompt_tokens))
        steady = self._steady.get(key)
        incumbent = self._incumbents.get(model)
        late = self._late(model, request.now)
        if late:  # a pair in the middle of a cold start: not now
            return _tried_last(self._rank_anew(policy, request, scores, draw), late), None
        if steady is not None and steady.holds(
            scores, policy, incumbent, self._rate_limits_version, self._breakers.version
        ):
            if steady.ranking is not None and draw:
                return steady.ranking, steady
            standing = steady.standing
        else:
            view = self._view(policy, model, scores, request.now, request)
            standing = prepare(view)
        ranking = order(
            standing, self._rng, self._breakers.pending, probed=self.is_probed(policy),
            draw=draw, shares=self._shares,
        )  # fmt: skip
        if not draw:
            return ranking, None
        if ranking.leader is not None:
            self._incumbents[model] = ranking.leader
        if ranking.leader == incumbent and standing.lasts:
            steady = self._steady[key] = _Steady(
                scores, policy, incumbent, self._rate_limits_version, self._breakers.version,
                standing,
                ranking if is_steady(ranking, policy, incumbent, key[2]) else None,
            )  # fmt: skip
            return ranking, steady
        self._steady.pop(key, None)
        return ranking, None

    def _rank_anew(
        self, policy: ModelPolicy, request: RouteRequest, scores: Mapping[Pair, Score],
        draw: bool,
    ) -> Ranking:  # fmt: skip
        """A ranking made afresh and not kept (the inputs hold for this moment only)."""
        view = self._view(policy, request.model, scores, request.now, request)
        return order(
            prepare(view), self._rng, self._breakers.pending, probed=self.is_probed(policy),
            draw=draw, shares=self._shares,
        )  # fmt: skip

    def _late(self, model: str, now: float) -> dict[str, float]:
        """The model's pairs with an attempt in flight past its cold-start-like time, and
        since when: each is probably loading right now, so the next request should not
        queue behind it (its sample says so only once its first token comes, maybe a
        minute later)."""
        late = {}
        for provider, waiting in self._slow_at.get(model, {}).items():
            since = min(waiting.values())
            if since <= now:
                late[provider] = since
        return late

    def _landed(self, pair: Pair, token: int) -> None:
        model, provider = pair
        providers = self._slow_at.get(model)
        waiting = providers.get(provider) if providers is not None else None
        if providers is None or waiting is None:
            return
        waiting.pop(token, None)
        if not waiting:
            del providers[provider]
            if not providers:
                del self._slow_at[model]

    def _view(
        self,
        policy: ModelPolicy,
        model: str,
        scores: Mapping[Pair, Score],
        now: float,
        request: RouteRequest | None = None,
    ) -> ModelView:
        return ModelView(
            policy, model, self._pairs[model], scores, now, self._incumbents.get(model),
            self._rate_limited_until, self._breakers.states,
            request.served_by if request is not None else None,
            request.unserved_reason if request is not None else "",
            request.prompt_tokens if request is not None else 0,
        )  # fmt: skip

    def _plain(self, ranking: Ranking, model: str, now: float) -> Plan:
        """The plan of a ranking no control or steering shaped."""
        blocked = None if ranking.ranked else self._blocked(model, ranking.excluded, now)
        return Plan(
            ranking.ranked, ranking.excluded, ranking.reason, ranking.verdict,
            candidates=ranking.candidates, blocked=blocked,
        )  # fmt: skip

    def _blocked(self, model: str, excluded: tuple[Candidate, ...], now: float) -> Blocked:
        """Why nothing can be tried. Only the pairs out for a while count (a rate limit, a
        circuit); those out by policy or endpoint would be out anyway."""
        states = self._breakers.states
        pairs = [
            pair for c in excluded
            if (pair := Pair(model, c.provider)) in self._rate_limited_until or pair in states
        ]  # fmt: skip
        waits = [self._rate_limited_until.get(pair, 0.0) - now for pair in pairs]
        if waits and all(w > 0 for w in waits):
            return Blocked(True, min(waits))
        if any(pair in states for pair in pairs):
            interval = self._policies.current.for_model(model).circuit.trial_interval_s
            return Blocked(False, retry_after_s(states, pairs, now, interval))
        return Blocked(False, None)

    def _attempt_ended(self, event: AttemptEnded) -> None:
        pair = event.pair
        circuit = self._policies.current.for_model(pair.model).circuit
        if event.outcome is Outcome.RATE_LIMITED and not event.client_fault:
            # the newest Retry-After holds (the provider's latest word), at most the cap
            wait = event.retry_after_s if event.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
            self._rate_limited_until[pair] = event.now + min(wait, circuit.max_retry_after_s)
            self._rate_limits_version += 1
        # what the request caused is not the pair's: the attempt ends, nothing counts
        outcome = Outcome.CANCELLED if event.client_fault else event.outcome
        self._breakers.on_result(pair, outcome, event.now, circuit, event.token)


def _tried_last(ranking: Ranking, late: Mapping[str, float]) -> Ranking:
    """The ranking with the late pairs moved after the others (unless none is left)."""
    ahead = tuple(c for c in ranking.ranked if c.provider not in late)
    behind = tuple(c for c in ranking.ranked if c.provider in late)
    if not ahead or not behind:
        return ranking
    base = ranking.reason
    names = ", ".join(c.provider for c in behind)
    text = LazyText(lambda: f"{base}; tried last: {names} (an attempt in flight past its "
                            "cold-start-like time: probably cold now)")  # fmt: skip
    return replace(ranking, ranked=ahead + behind, reason=text, _rendered=[])


@dataclass(slots=True)
class _Steady:
    scores: Mapping[Pair, Score]
    policy: ModelPolicy
    incumbent: str | None
    rate_limits_version: int
    circuits_version: int
    standing: Standing  # reused while the inputs are the same: the request only draws
    ranking: Ranking | None  # reused whole when every draw gives it (`is_steady`)
    plan: Plan | None = None  # the steady ranking's plain plan, made once

    def holds(
        self,
        scores: Mapping[Pair, Score],
        policy: ModelPolicy,
        incumbent: str | None,
        rate_limits_version: int,
        circuits_version: int,
    ) -> bool:
        return (
            self.scores is scores
            and self.policy is policy
            and self.incumbent == incumbent
            and self.rate_limits_version == rate_limits_version
            and self.circuits_version == circuits_version
        )
