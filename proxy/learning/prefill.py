"""TTFT against the prompt's size: size classes and each pair's fitted prefill rate.

Prefill grows with the prompt at a rate each provider sets (GPU tier, engine, chunked
prefill): one provider answers a short prompt first, another a long one, so a pair's scores
compare like with like. Prompt sizes fall into classes (`size_class`: under 512 tokens, under
2k, 8k, 32k, above), and the scores hold a belief per class the model has samples in
(learning.stats), each made from the pair's samples of that class and, at a quarter of the
weight, of the classes beside it, moved to the class's centre by the pair's fitted prefill
rate (`fit`: weighted least squares on its warm samples, once their sizes span enough to fix
a slope). A pair with no sample near a class has only the model's prior there: it may be
explored, it is not preferred blindly. numpy, pure.
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

from proxy.core.domain import Prefill

SIZE_BOUNDS = (512, 2048, 8192, 32768)  # prompt tokens: the classes' upper bounds
CENTERS = (128.0, 1024.0, 4096.0, 16384.0, 65536.0)  # a class's samples are moved to this
NEIGHBOUR_WEIGHT = 0.25  # a sample of the class beside counts this much; further, not at all
MIN_FIT = 8  # warm samples a slope needs
MIN_SPREAD = 4.0  # ... of which MIN_LONG at least this many times the short ones' size
MIN_LONG = 3


def size_class(prompt_tokens: int) -> int:
    """The class of a prompt of `prompt_tokens` tokens (0: the shortest)."""
    return bisect.bisect_right(SIZE_BOUNDS, prompt_tokens)


def describe_size(prompt_tokens: int) -> str:
    """'12k' or '300' (for reasons)."""
    return f"{prompt_tokens / 1000:.3g}k" if prompt_tokens >= 1000 else str(prompt_tokens)


def classes_of(tokens: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.searchsorted(np.array(SIZE_BOUNDS, np.float64), tokens, side="right")


def fit(
    tokens: npt.NDArray[np.float64],
    times: npt.NDArray[np.float64],
    warm: npt.NDArray[np.bool_],
    weights: npt.NDArray[np.float64],
    prior_s_per_token: float,
) -> Prefill:
    """The pair's TTFT = base + s_per_token x prompt tokens, from its warm samples (`warm`:
    a first token, not cold-start-like) weighted like its evidence. `identified` when their
    sizes span enough for a slope (MIN_LONG of them at least MIN_SPREAD x the lower quartile
    of sizes: a few long probes among many short samples are enough); else the slope is
    `prior_s_per_token` and the base the warm median less it."""
    x, y, w = tokens[warm], times[warm], weights[warm]
    if len(x) >= MIN_FIT and w.sum() > 0:
        short = max(float(np.percentile(x, 25)), 1.0)
        if int(np.count_nonzero(x >= MIN_SPREAD * short)) >= MIN_LONG:
            xm = float(np.dot(w, x) / w.sum())
            ym = float(np.dot(w, y) / w.sum())
            var = float(np.dot(w, (x - xm) ** 2))
            slope = max(0.0, float(np.dot(w, (x - xm) * (y - ym))) / var) if var > 0 else 0.0
            return Prefill(max(0.0, ym - slope * xm), slope, True, len(x))
    if len(y) == 0:
        return Prefill(0.0, prior_s_per_token, False, 0)
    base = float(np.median(y)) - prior_s_per_token * float(np.median(x))
    return Prefill(max(0.0, base), prior_s_per_token, False, len(x))


def moved(
    times: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.float64],
    classes: npt.NDArray[np.int64],
    prefill: Prefill,
    target: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The pair's times as if every prompt had class `target`'s centre size (by its own
    identified rate; unmoved without one), and each sample's weight factor there."""
    factor = np.where(
        classes == target, 1.0, np.where(np.abs(classes - target) == 1, NEIGHBOUR_WEIGHT, 0.0)
    )
    if not prefill.identified:
        return times, factor
    shifted = times + prefill.s_per_token * (CENTERS[target] - tokens)
    return np.maximum(shifted, 1e-3), factor
