"""Statistics for the seed gates.

With 5-10 seeds no interval can show a success rate >= 80% at 95% confidence (that needs >= 14
seeds with Clopper-Pearson), so the success-rate gate is a screening rule (at least ceil(0.8 n)
successes) and the intervals are reported as evidence, not used to pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for the success probability."""
    if trials <= 0:
        raise ValueError("clopper_pearson needs at least one trial")
    alpha = 1 - confidence
    low = (
        0.0
        if successes == 0
        else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    )
    high = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    )
    return low, high


def bootstrap_rate_interval(
    outcomes: Sequence[bool],
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes, with a fixed RNG seed (so a
    report is reproducible). Degenerate by construction when all outcomes agree: 5/5 -> [1, 1]."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap needs at least one outcome")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def required_successes(trials: int, rate: float) -> int:
    """ceil(rate * n), robust to floating error (0.8 * 5 must give 4, not 5)."""
    return math.ceil(round(rate * trials, 9))


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over the absolute mean."""
    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        raise ValueError("coefficient of variation needs at least two values")
    mean = float(np.mean(array))
    if mean == 0.0:
        return math.inf
    return float(np.std(array, ddof=1) / abs(mean))


def relative_drop(before: float, after: float) -> float:
    """(before - after) / before for a non-negative loss; -inf when before is 0 or not finite."""
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 0:
        return -math.inf
    return (before - after) / before
