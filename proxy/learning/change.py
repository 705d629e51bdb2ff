"""Change detection: has a pair's latency changed, and since when?

Evidence only ages otherwise: after a provider degrades, its old samples keep it looking good
for as long as they weigh. A sequential test on each pair's samples against its own history
notices the change within a few samples, so the evidence from before it can stop counting
(learning.stats weighs it down) and the model's other pairs can be measured again
(routing.advice asks the prober).

`Detector` is the online test of one pair: the scoreboard feeds it each new sample once, as
it arrives (a slow attempt's sample arrives after faster ones that started later), so it is
one pass over the pair's history (a test rerun on every refresh over a sliding window would
get a fresh chance to raise a false alarm each time). It reads a sample's TTFT less its
prompt's prefill (the pair's fitted slope): a long prompt is no change. Per regime (the
samples since the last change point), the first `baseline` samples set the threshold of a
cold-start-like sample (above `cold_factor` x median and `cold_floor_s`), and every sample of
the regime so far the reference: the median and robust spread (interquartile range) of log
TTFT over the warm ones, and the share of cold-start-like samples (a censored sample counts
as one: the TTFT it hid may have been, so a tail that hedging hid and probes later show is
not taken for a change). Three one-sided CUSUMs then run over the samples that follow:
- cold starts (a Bernoulli CUSUM): each cold-start-like sample adds log(p1/p0), each warm one
  log((1-p1)/(1-p0)), with p0 an upper bound of the regime's cold share before the current
  excursion and p1 = max(3 p0, 0.25);
- warm latency up and down: each warm sample adds its clipped robust z-score minus `warm_k`
  (the samples of an excursion join the reference only once it is over).
A sum above its threshold is a change: the regime restarts at the sample where that sum last
left zero (the change point) and the samples since are read again as the new regime's.
Until a regime that began with a warm latency change has its `baseline` (a pair that
degraded gets few samples, probes mostly), its next change shows as a run: RUN samples in a
row faster (or slower) than every earlier one of the regime.
`detect(window)` runs a fresh detector over a whole window (tests, one-off scores).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proxy.core.domain import Change, Sample, Source
from proxy.settings.policy import ChangeParams

MIN_SCALE = 0.05  # robust sd of log TTFT at least this (a window of identical values)
Z_CLIP = 4.0  # one sample moves a warm CUSUM by at most this many robust sds
RUN = 5  # samples in a row past every earlier one of a young regime: a change (`_run_test`)
MAX_WARM = 2000  # warm samples a regime's reference holds (its newest)
LATE_S = 900.0  # a sample may reach the store this long after its attempt started
FED_KEPT = 4096  # past this many remembered samples, those older than LATE_S are forgotten


@dataclass(frozen=True, slots=True)
class _Obs:
    ts: float
    t: float  # TTFT, or the censoring time when censored
    censored: bool
    seq: int = 0  # the order it was fed in


@dataclass(frozen=True, slots=True)
class _Baseline:
    log_median: float
    scale: float
    cold_above_s: float
    cold_share: float  # smoothed: (cold + 1) / (n + 2)
    p90_s: float

    @classmethod
    def of(cls, base: Sequence[_Obs], params: ChangeParams) -> _Baseline:
        seen = [o.t for o in base if not o.censored] or [o.t for o in base]
        median = statistics.median(seen)
        cold_above = max(params.cold_factor * median, params.cold_floor_s)
        warm = [math.log(max(t, 1e-6)) for t in seen if t <= cold_above] or [math.log(median)]
        center = statistics.median(warm)
        mad = statistics.median(abs(x - center) for x in warm)
        colds = sum(1 for o in base if o.t > cold_above or o.censored)
        ordered = sorted(seen)
        p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
        return cls(center, max(1.4826 * mad, MIN_SCALE), cold_above,
                   (colds + 1) / (len(base) + 2), p90)  # fmt: skip


def detect(window: Sequence[Sample], params: ChangeParams) -> Change | None:
    """The newest change in `window` (oldest first), or None."""
    return Detector(params).feed(window)


class Detector:
    """The online change test of one pair (see the module's docstring)."""

    def __init__(self, params: ChangeParams, keep: int = 1000) -> None:
        """`keep`: the recent observations kept to be read again after a change."""
        self.params = params
        self.change: Change | None = None
        self.last_ts = -math.inf  # the newest start time fed
        self._fed: dict[tuple[float, str, str, float], float] = {}  # sample key -> its time
        self._seen: deque[_Obs] = deque(maxlen=keep)
        self._seq = 0
        self._after_change = False  # the current regime began with a change
        self._start([])

    def feed(self, samples: Iterable[Sample], s_per_token: float = 0.0) -> Change | None:
        """Take in the samples not fed yet, in the order they come (a sample's time is when
        its attempt started; a slow one, a timeout, or another replica's arrives after
        faster later ones: it is read when it arrives, not skipped). `s_per_token`: the
        pair's prefill slope: a sample is read as its TTFT less its prompt's prefill, so a
        long prompt is no change. A steered sample (Source.STEERED: its request the client
        placed, maybe to make the pair look slow) is not read. Returns the newest change."""
        for s in samples:
            t = s.ttft_s if s.ttft_s is not None else s.censored_at_s
            if t is None or s.source is Source.STEERED:
                continue
            key = (s.timestamp, s.replica, s.outcome.value, t)
            if key in self._fed:
                continue
            self._fed[key] = s.timestamp
            self.last_ts = max(self.last_ts, s.timestamp)
            self._seq += 1
            residual = max(t - s_per_token * s.prompt_tokens, 0.05 * t, 1e-6)
            o = _Obs(s.timestamp, residual, s.ttft_s is None, self._seq)
            self._seen.append(o)
            replay = self._take(o)
            if replay is not None:
                # a warm latency change (queueing, load) may go back as fast; a pair that
                # turned cold-start-prone shows its recovery in its cold share
                self._after_change = self.change is not None and self.change.what == "warm latency"
                self._start(replay)
        if len(self._fed) > FED_KEPT:
            horizon = self.last_ts - LATE_S
            self._fed = {k: ts for k, ts in self._fed.items() if ts >= horizon}
        return self.change

    def _start(self, replay: list[_Obs]) -> None:
        """A new regime, reading `replay` (the samples since its change point) again; an
        alarm while reading starts the next regime from its own change point."""
        while True:
            self._reset()
            self._replayed = len(replay)  # the run test leaves them out: they are the extremes
            again = None
            for o in replay:
                again = self._take(o)
                if again is not None:
                    break
            if again is None:
                return
            replay = again

    def _reset(self) -> None:
        self._first: list[_Obs] = []
        self._base: _Baseline | None = None
        self._warm: list[float] = []  # the regime's newest warm log TTFTs, sorted
        self._warm_order: deque[float] = deque()  # the same, oldest first (to drop them)
        self._held: list[float] = []  # an excursion's: they join the reference after it
        self._sums = [0.0, 0.0, 0.0]  # cold starts up, warm latency up, warm latency down
        self._since = [0, 0, 0]  # the seq where each sum last left zero
        self._n = self._colds = 0  # the regime's samples and cold-start-like ones so far
        self._before = (0, 0)  # (n, colds) when the cold sum last left zero

    def _take(self, o: _Obs) -> list[_Obs] | None:
        """Read one observation; on an alarm, the samples since its change point (to read
        again as the new regime's), else None."""
        if self._base is None:
            self._first.append(o)
            if len(self._first) == self.params.baseline:
                self._begin(self._first)
            elif self._after_change:
                return self._run_test()
            return None
        base, sums = self._base, self._sums
        is_cold = o.t > base.cold_above_s
        if not (o.censored and not is_cold):  # "slower than t" inside the warm range: unknown
            n, colds = self._before if sums[0] > 0.0 else (self._n, self._colds)
            p0 = _upper_share(colds, n)
            p1 = min(0.95, max(3.0 * p0, 0.25, p0 + 0.1))
            self._step(0, o.seq, math.log(p1 / p0) if is_cold else math.log((1 - p1) / (1 - p0)))
            if not is_cold:
                self._warm_step(math.log(max(o.t, 1e-6)), o.seq)
        self._n += 1
        self._colds += is_cold or o.censored
        for which, limit in ((0, self.params.cold_h), (1, self.params.warm_h),
                             (2, self.params.warm_h)):  # fmt: skip
            if sums[which] > limit:
                point = self._since[which]
                replay = [x for x in self._seen if x.seq >= point]
                self.change = _change(replay, which, base)
                return replay
        return None

    def _run_test(self) -> list[_Obs] | None:
        """Before a regime that began with a change has its reference (a pair that degraded
        gets few samples: probes), its recovery (or a further change) shows as a run: the
        last RUN samples all below every earlier one since the alarm (or all above it; the
        samples that raised the alarm are its extremes, so they are left out). With
        no change that happens by chance once in C(n + RUN, RUN) (1 in 252 for 5 + 5)."""
        first = self._first[self._replayed :]  # the samples that came after the alarm
        if len(first) < 2 * RUN:
            return None
        earlier, last = first[:-RUN], first[-RUN:]
        lowest = min(o.t for o in earlier)
        highest = max(o.t for o in earlier if not o.censored) if any(
            not o.censored for o in earlier) else math.inf  # fmt: skip
        if all(o.t < lowest and not o.censored for o in last):
            which = 2
        elif all(o.t > highest for o in last):
            which = 1
        else:
            return None
        self.change = _change(last, which, _Baseline.of(earlier, self.params))
        return list(last)

    def _begin(self, first: list[_Obs]) -> None:
        base = self._base = _Baseline.of(first, self.params)
        warm = [math.log(max(o.t, 1e-6)) for o in first
                if not o.censored and o.t <= base.cold_above_s]  # fmt: skip
        self._warm_order = deque(warm)
        self._warm = sorted(warm)
        self._n = len(first)
        self._colds = sum(1 for o in first if o.t > base.cold_above_s or o.censored)

    def _warm_step(self, x: float, seq: int) -> None:
        warm, sums = self._warm, self._sums
        if len(warm) >= 3:
            center, scale = _center_scale(warm)
            z = max(-Z_CLIP, min(Z_CLIP, (x - center) / scale))
            self._step(1, seq, z - self.params.warm_k)
            self._step(2, seq, -z - self.params.warm_k)
        self._held.append(x)
        if sums[1] == 0.0 and sums[2] == 0.0:  # no excursion under way
            order = self._warm_order
            for value in self._held:
                bisect.insort(warm, value)
                order.append(value)
                if len(order) > MAX_WARM:  # the reference is the regime's newest MAX_WARM
                    del warm[bisect.bisect_left(warm, order.popleft())]
            self._held.clear()

    def _step(self, which: int, seq: int, amount: float) -> None:
        sums = self._sums
        if sums[which] == 0.0:
            self._since[which] = seq  # a run starts here: the change point, should it alarm
            if which == 0:
                self._before = (self._n, self._colds)
        sums[which] = max(0.0, sums[which] + amount)


def _center_scale(ordered: list[float]) -> tuple[float, float]:
    """Median and robust sd (interquartile range / 1.349) of sorted values."""
    n = len(ordered)
    center = ordered[n // 2]
    spread = (ordered[(3 * n) // 4] - ordered[n // 4]) / 1.349
    return center, max(spread, MIN_SCALE)


def _upper_share(count: int, n: int) -> float:
    """An upper bound (about 90%) of a share seen `count` times in `n`: a cold-start rate
    that chance alone would rarely exceed, so that a few unlucky cold starts in a pair that
    has them now and then do not look like a change."""
    p = (count + 1) / (n + 2)
    return min(0.9, p + 1.2816 * math.sqrt(p * (1.0 - p) / (n + 2)))


def _change(after: list[_Obs], which: int, base: _Baseline) -> Change:
    """The change of kind `which` (cold starts up, warm up, warm down) over `after`: the
    samples from its change point to the one that raised the alarm."""
    values = sorted(o.t for o in after)
    p90_after = values[min(len(values) - 1, math.ceil(0.9 * len(values)) - 1)]
    colds_after = sum(1 for o in after if o.t > base.cold_above_s) / len(after)
    if which == 0:
        what, before, now = "cold starts", base.cold_share, colds_after
    else:
        what, before, now = "warm latency", base.p90_s, p90_after
    stamps = [o.ts for o in after]  # in the order fed: a late sample may be older
    return Change(
        at_ts=min(stamps),
        detected_ts=max(stamps),
        direction="improved" if which == 2 else "degraded",
        what=what,
        before=before,
        after=now,
        n_after=len(after),
    )
