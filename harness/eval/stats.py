"""The uncertainty of evaluation numbers: intervals, paired comparisons and sample sizes (numpy only).

    wilson(successes, total)        Wilson score interval of a success rate
    bootstrap_mean(values)          BCa bootstrap interval of a mean of per-unit values (per chain, per episode)
    newcombe(k_a, n_a, k_b, n_b)    interval of the difference of two independent rates (b - a)
    sign_flip_p(differences)        exact two-sided paired permutation (sign-flip) test of integer differences
    newcombe_paired(a, b)           interval of the difference of two paired rates (b - a; the same chains)
    paired(a, b)                    mean difference of paired values: estimate, interval, exact p-value
    units_needed(sd, delta)         paired units to detect a mean difference delta (95 % confidence, 80 % power)
    chain_intervals, rate_intervals the `intervals` block of results.json (chains / single-task mode)

Which interval where, and why (docs/EVALUATION.md, "Intervals"):
  * avg. len is a mean of per-chain counts 0..5 with a bounded, skewed distribution: a bootstrap over chains,
    BCa (bias-corrected and accelerated) rather than percentile, because the percentile interval under-covers
    for skewed data and few chains (a strong agent on 20 chains: tests/test_eval_stats.py's coverage check
    fails with it).
  * chain_sr[i] and per-task success are proportions of independent yes/no outcomes: Wilson's score interval.
    A bootstrap of a proportion collapses to zero width at 0 % or 100 % and, like the Wald interval it
    approximates, covers a rare rate badly.
Every bootstrap is seeded (BOOTSTRAP_SEED), so the same records give the same report.

What an interval covers: the spread of the number over chains drawn like these (CALVIN's 1000 chains are
themselves a sample of its chain generator) with the agent's and simulator's randomness; not the spread
over training seeds, which needs several trained models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
POWER = 0.8
_CELLS = 4_000_000  # resamples x distinct values drawn at a time: bounds the memory of the count matrix
_NORMAL = NormalDist()


def z_value(level: float) -> float:
    """The two-sided standard normal quantile of a confidence level (1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return _NORMAL.inv_cdf(0.5 + level / 2)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"low": round(self.low, 6), "high": round(self.high, 6)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Interval | None":
        return None if d is None else cls(float(d["low"]), float(d["high"]))

    def text(self, percent: bool = False, digits: int | None = None) -> str:
        """'[2.95, 3.28]', or with percent=True '[82.6%, 94.5%]' (from fractions)."""
        if percent:
            d = 1 if digits is None else digits
            return f"[{self.low * 100:.{d}f}%, {self.high * 100:.{d}f}%]"
        d = 2 if digits is None else digits
        return f"[{self.low:.{d}f}, {self.high:.{d}f}]"


def interval_text(d: Mapping[str, Any] | None, percent: bool = False, digits: int | None = None) -> str:
    """An interval as results.json stores it ({"low", "high"} or null) as text; '-' when there is none."""
    interval = Interval.from_dict(d)
    return "-" if interval is None else interval.text(percent, digits)


def wilson_bounds(successes: Any, totals: Any, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score bounds, elementwise over arrays of successes and totals (totals > 0)."""
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(totals, dtype=np.float64)
    z2 = z_value(level) ** 2
    p = k / n
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) * np.sqrt(z2) / (1 + z2 / n)
    # exact at the ends (rounding leaves 1e-17 where the formula gives 0)
    return np.where(k == 0, 0.0, np.clip(center - half, 0.0, 1.0)), np.where(k == n, 1.0, np.clip(center + half, 0.0, 1.0))


def wilson(successes: int, total: int, level: float = LEVEL) -> Interval | None:
    """Wilson's score interval of successes/total; None when nothing was attempted."""
    if total <= 0:
        return None
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, total={total}], got {successes}")
    low, high = wilson_bounds(successes, total, level)
    return Interval(float(low), float(high))


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `resamples` bootstrap resamples (n draws with replacement) of `values`.

    Drawing n units with replacement gives each distinct value a Multinomial(n, its share) count, so the
    resample is drawn as those counts: the same distribution as resampling indices, at the cost of the
    number of distinct values (6 for chain lengths) rather than of n."""
    distinct, counts = np.unique(values, return_counts=True)
    n = values.size
    chunk = max(1, _CELLS // distinct.size)
    means = [rng.multinomial(n, counts / n, size=min(chunk, resamples - start)) @ distinct / n
             for start in range(0, resamples, chunk)]
    return np.concatenate(means)


def bootstrap_mean(values: Sequence[float] | np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED, bounds: tuple[float, float] | None = None) -> Interval | None:
    """BCa bootstrap interval of the mean of `values` (one per independent unit); None for no values.

    BCa (Efron 1987): percentiles of the bootstrap means moved by the bias correction z0 (how many
    resampled means fall below the observed one) and the acceleration a (the skewness of the jackknife
    influence values, which for a mean are the values' deviations from it).
    Values that are all the same leave nothing to resample: with the values' `bounds` (chain lengths: 0, 5), the
    share of units that would differ is at most Wilson's upper bound for 0 of n, and each moves the mean at
    most to a bound (an interval that narrows with n instead of a false [5, 5] from 3 chains); without
    `bounds`, the mean alone."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return None
    mean = float(x.mean())
    if bounds is not None and not np.all((bounds[0] <= x) & (x <= bounds[1])):
        raise ValueError(f"bootstrap_mean: values must lie within bounds {bounds}, got {x.min()} to {x.max()}")
    if np.all(x == x[0]):
        if bounds is None:
            return Interval(mean, mean)
        unseen = float(wilson_bounds(0, x.size, level)[1])
        return Interval(mean - (mean - bounds[0]) * unseen, mean + (bounds[1] - mean) * unseen)
    means = _resampled_means(x, resamples, np.random.default_rng(seed))
    below = np.sum(means < mean - 1e-12) + 0.5 * np.sum(np.abs(means - mean) <= 1e-12)
    z0 = _NORMAL.inv_cdf(min(max(below / means.size, 0.5 / means.size), 1 - 0.5 / means.size))
    dev = x - mean
    accel = float((dev**3).sum() / (6 * (dev**2).sum() ** 1.5))
    bounds = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        z = _NORMAL.inv_cdf(tail)
        bounds.append(float(np.quantile(means, _NORMAL.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z))))))
    return Interval(*bounds)


def newcombe(successes_a: int, total_a: int, successes_b: int, total_b: int, level: float = LEVEL) -> Interval | None:
    """Newcombe's hybrid score interval of rate_b - rate_a for two independent samples (from their Wilson
    intervals; it keeps Wilson's behaviour near 0 and 1, where the Wald difference interval fails)."""
    a, b = wilson(successes_a, total_a, level), wilson(successes_b, total_b, level)
    if a is None or b is None:
        return None
    pa, pb = successes_a / total_a, successes_b / total_b
    d = pb - pa
    return Interval(d - math.hypot(pb - b.low, a.high - pa), d + math.hypot(b.high - pb, pa - a.low))


def newcombe_paired(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, level: float = LEVEL) -> Interval:
    """Newcombe's score interval (his method 10, 1998) of rate_b - rate_a for paired yes/no outcomes (the same
    chains or episodes under two agents): the two Wilson intervals combined with the pairs' correlation phi.
    Unlike a bootstrap of the differences, it does not collapse when few pairs differ or none do, and it stays
    close to the exact McNemar test (sign_flip_p of the differences), which is the more conservative of the two
    when only a handful of pairs differ."""
    a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
    n = a.size
    both, b_only, a_only = int(np.sum(a & b)), int(np.sum(b & ~a)), int(np.sum(a & ~b))
    neither = n - both - b_only - a_only
    p1, p2 = (both + b_only) / n, (both + a_only) / n
    (l1, l2), (u1, u2) = wilson_bounds([both + b_only, both + a_only], n, level)
    margins = (both + b_only) * (a_only + neither) * (both + a_only) * (b_only + neither)
    # phi with Newcombe's continuity correction: a positive association below n/2 counts as none (the plain phi
    # makes the interval too narrow: 4 of 50 chains differing one way would exclude 0 at McNemar's p = 0.125)
    association = both * neither - b_only * a_only
    if association > n / 2:
        association -= n / 2
    elif association > 0:
        association = 0
    phi = association / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return Interval(p1 - p2 - delta, p1 - p2 + epsilon)


def _binomial_half_pmf(m: int) -> np.ndarray:
    """P(K = k), k = 0..m, for K ~ Binomial(m, 1/2) (computed in logs: m may be in the thousands)."""
    k = np.arange(1, m + 1)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log(m - k + 1) - np.log(k))])
    return np.exp(log_comb - m * math.log(2))


def sign_flip_p(differences: Sequence[float] | np.ndarray) -> float:
    """Exact two-sided p-value of the paired sign-flip (permutation) test of integer differences.

    Under "no difference", each unit's two results are exchangeable, so each difference is as likely
    with either sign: the null distribution of the sum is that of sum(s_i |d_i|) over all 2^n sign vectors.
    Units with the same |d| contribute |d| (2K - m), K ~ Binomial(m, 1/2), so the distribution is a few
    convolutions on the integer grid. For differences in {-1, 0, 1} this is the exact McNemar test."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    if not np.all(d == np.round(d)):
        raise ValueError("sign_flip_p takes integer differences (of per-chain counts or successes)")
    magnitudes = np.abs(d[d != 0]).astype(np.int64)
    if magnitudes.size == 0:
        return 1.0
    total = int(magnitudes.sum())
    pmf = np.zeros(2 * total + 1)
    pmf[total] = 1.0  # index = sum + total
    for v, m in zip(*np.unique(magnitudes, return_counts=True)):
        step = np.zeros(2 * v * m + 1)
        step[:: 2 * v] = _binomial_half_pmf(int(m))  # sums -v*m, -v*m + 2v, ..., v*m
        pmf = np.convolve(pmf, step)[v * m : v * m + 2 * total + 1]
    observed = abs(int(round(d.sum())))
    sums = np.arange(-total, total + 1)
    return float(min(1.0, pmf[np.abs(sums) >= observed].sum()))


@dataclass(frozen=True)
class PairedDifference:
    """mean(b) - mean(a) over n paired units."""

    n: int
    mean_a: float
    mean_b: float
    difference: float
    interval: Interval | None  # yes/no units: newcombe_paired; counts: BCa bootstrap over the units' differences
    p_value: float  # exact sign-flip test
    sd: float  # standard deviation of the per-unit differences (ddof 1; 0 for one unit)
    level: float

    def significant(self) -> bool:
        return self.p_value < 1 - self.level

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean_a": self.mean_a, "mean_b": self.mean_b, "difference": self.difference,
                "interval": self.interval.to_dict() if self.interval else None, "p_value": self.p_value,
                "sd": self.sd, "level": self.level}


def paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = LEVEL,
           resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, most: float = 1.0) -> PairedDifference:
    """The paired comparison of b with a (integer per-unit values from 0 to `most`, e.g. chain lengths with most=5,
    in the same unit order). Yes/no values get Newcombe's paired interval, counts the BCa bootstrap."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired comparison needs equally many values, at least one (got {a.size} and {b.size})")
    if not (np.all((0 <= a) & (a <= most)) and np.all((0 <= b) & (b <= most))):
        raise ValueError(f"paired comparison of values from 0 to most={most}, got values from "
                         f"{min(a.min(), b.min())} to {max(a.max(), b.max())}")
    d = b - a
    binary = np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all() and most == 1
    interval = newcombe_paired(a, b, level) if binary else bootstrap_mean(d, level, resamples, seed, bounds=(-most, most))
    return PairedDifference(
        n=int(d.size), mean_a=float(a.mean()), mean_b=float(b.mean()), difference=float(d.mean()),
        interval=interval, p_value=sign_flip_p(d),
        sd=float(d.std(ddof=1)) if d.size > 1 else 0.0, level=level,
    )


def units_needed(sd: float, delta: float, level: float = LEVEL, power: float = POWER) -> int | None:
    """Paired units (chains) for a two-sided test at `level` to detect a true mean difference `delta` with
    probability `power`, for per-unit differences of standard deviation `sd` (normal approximation):
    n = ((z_{level} + z_{power}) sd / delta)^2, and at least the fewest units with which the exact sign-flip
    test can reject at all (its smallest p-value is 2 / 2^n: 6 units at 95 %). None when sd is 0 (no
    variation to base it on)."""
    if delta == 0:
        raise ValueError("the difference to detect must not be 0")
    if sd <= 0:
        return None
    fewest = math.floor(math.log2(2 / (1 - level))) + 1
    return max(fewest, math.ceil(((z_value(level) + _NORMAL.inv_cdf(power)) * sd / abs(delta)) ** 2))


def _as_dict(interval: Interval | None) -> dict[str, float] | None:
    return interval.to_dict() if interval is not None else None


def chain_intervals(completed: Sequence[int], task_info: Mapping[str, Mapping[str, int]], chain_length: int = 5,
                    level: float = LEVEL, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Intervals of CALVIN's numbers, keyed as CALVIN's keys are: avg_seq_len (BCa bootstrap over chains),
    chain_sr "1".."5" (Wilson over chains), task_info (Wilson over a task's attempts); null without data."""
    done = np.asarray(completed, dtype=np.int64)
    return {
        "level": level,
        "method": {"avg_seq_len": f"BCa bootstrap over chains, {resamples} resamples, seed {seed}",
                   "chain_sr": "Wilson score over chains", "task_info": "Wilson score over a task's attempts"},
        "avg_seq_len": _as_dict(bootstrap_mean(done, level, resamples, seed, bounds=(0, chain_length))),
        "chain_sr": {str(i): _as_dict(wilson(int((done >= i).sum()), done.size, level)) for i in range(1, chain_length + 1)},
        "task_info": {t: _as_dict(wilson(c["success"], c["total"], level)) for t, c in task_info.items()},
    }


def rate_intervals(tasks: Mapping[str, Mapping[str, int]], level: float = LEVEL) -> dict[str, Any]:
    """Single-task mode: Wilson intervals of each task's rate and of the success rate over all episodes
    (with equally many episodes per task, that rate is also the mean over tasks)."""
    return {
        "level": level,
        "method": {"success_rate": "Wilson score over all episodes", "tasks": "Wilson score over a task's episodes"},
        "success_rate": _as_dict(wilson(sum(c["success"] for c in tasks.values()), sum(c["total"] for c in tasks.values()), level)),
        "tasks": {t: _as_dict(wilson(c["success"], c["total"], level)) for t, c in tasks.items()},
    }
