"""harness.eval.stats: the intervals cover the truth about 95 % of the time (by simulation, with a known
success probability), the exact paired test equals brute-force enumeration and holds its level, and the
chains-needed estimate gives the promised power. Everything is seeded, so nothing here can flake."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.eval.results import summarize
from harness.eval.stats import (Interval, bootstrap_mean, chain_intervals, newcombe, paired, rate_intervals, sign_flip_p,
                                units_needed, wilson, wilson_bounds, z_value)
from tests.test_eval_results import RECORDS

Z = 1.959963984540054


def chain_length_probs(q: float) -> np.ndarray:
    """P(completed = 0..5) for a chain whose subtasks each succeed with probability q, independently."""
    return np.array([q**k * (1 - q) for k in range(5)] + [q**5])


@pytest.mark.parametrize("p, n", [(0.5, 20), (0.1, 50), (0.03, 50), (0.3, 100), (0.9, 200)])
def test_wilson_covers_a_known_rate_95_percent_of_the_time(p, n):
    rng = np.random.default_rng(1)
    k = rng.binomial(n, p, size=20_000)
    low, high = wilson_bounds(k, n)
    coverage = np.mean((low <= p) & (p <= high))
    assert 0.925 <= coverage <= 0.975, coverage
    # the simulation tells a bad interval from a good one: the textbook Wald interval misses a rare rate
    if p == 0.03:
        half = Z * np.sqrt(k / n * (1 - k / n) / n)
        assert np.mean((k / n - half <= p) & (p <= k / n + half)) < 0.85


def test_wilson_by_hand():
    # 3 of 4: centre (0.75 + z^2/8) / (1 + z^2/4), half-width z sqrt(0.75*0.25/4 + z^2/64) / (1 + z^2/4)
    centre, half = (0.75 + Z**2 / 8) / (1 + Z**2 / 4), Z * math.sqrt(0.75 * 0.25 / 4 + Z**2 / 64) / (1 + Z**2 / 4)
    assert wilson(3, 4).low == pytest.approx(centre - half) and wilson(3, 4).high == pytest.approx(centre + half)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == 1.0 and wilson(0, 0) is None
    assert z_value(0.95) == pytest.approx(Z)
    with pytest.raises(ValueError, match="successes"):
        wilson(5, 4)


@pytest.mark.parametrize("q, n", [(0.8, 50), (0.95, 20), (0.5, 100), (0.99, 20)])
def test_bootstrap_avg_len_covers_the_true_avg_len_95_percent_of_the_time(q, n):
    """Simulated chains with a known per-subtask success q: the true avg. len is q + q^2 + ... + q^5.
    (0.95, 20) is the skewed case where a percentile bootstrap covers only ~90 %; BCa corrects it. (0.99, 20): a
    near-perfect agent, whose chains are all 5 in ~40 % of the runs; without the bound for that case, a zero-width
    [5, 5] there brought the coverage down to ~60 %."""
    probs = chain_length_probs(q)
    truth = float(probs @ np.arange(6))
    rng = np.random.default_rng(2)
    replicates = 600
    hits = 0
    for r in range(replicates):
        chains = rng.choice(6, size=n, p=probs)
        interval = bootstrap_mean(chains, resamples=1000, seed=r, bounds=(0, 5))
        hits += interval.low <= truth <= interval.high
    assert 0.925 <= hits / replicates <= 0.975, hits / replicates


def test_bootstrap_is_seeded_and_handles_the_edges():
    chains = [5, 5, 4, 0, 3, 5, 2, 5, 1, 5]
    assert bootstrap_mean(chains) == bootstrap_mean(chains)  # same records, same report
    interval = bootstrap_mean(chains)
    assert 0 <= interval.low < np.mean(chains) < interval.high <= 5
    assert bootstrap_mean([3, 3, 3]) == Interval(3.0, 3.0) and bootstrap_mean([]) is None
    # all 5 in 3 chains: not [5, 5]; a failing chain may be as likely as Wilson allows for 0 of 3 (up to 56 %)
    unseen = wilson(0, 3).high
    assert bootstrap_mean([5, 5, 5], bounds=(0, 5)) == Interval(5 - 5 * unseen, 5.0)
    assert bootstrap_mean([0] * 1000, bounds=(0, 5)).high == pytest.approx(5 * wilson(0, 1000).high)


def brute_force_p(d: list[int]) -> float:
    nonzero = [x for x in d if x]
    observed = abs(sum(d))
    flips = list(itertools.product((1, -1), repeat=len(nonzero)))
    return sum(abs(sum(s * x for s, x in zip(signs, nonzero))) >= observed for signs in flips) / len(flips)


def test_sign_flip_p_is_the_exact_permutation_p_value():
    rng = np.random.default_rng(3)
    for _ in range(20):
        d = rng.integers(-5, 6, size=int(rng.integers(1, 13))).tolist()
        assert sign_flip_p(d) == pytest.approx(brute_force_p(d), abs=1e-12), d
    # differences in {-1, 0, 1}: the exact McNemar test, 2 P(Bin(b + c, 1/2) <= min(b, c))
    b, c = 9, 2
    mcnemar = 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c)
    assert sign_flip_p([1] * b + [-1] * c + [0] * 30) == pytest.approx(mcnemar)
    assert sign_flip_p([0, 0, 0]) == 1.0
    assert sign_flip_p([-5] * 1000) < 1e-300 or sign_flip_p([-5] * 1000) == 0.0  # many chains: no overflow
    with pytest.raises(ValueError, match="integer"):
        sign_flip_p([0.5, 1])


def test_the_paired_test_holds_its_level_under_no_difference():
    """Two runs of the same agent: each chain's two lengths are exchangeable; p < 0.05 in at most ~5 % of cases."""
    rng = np.random.default_rng(4)
    probs = chain_length_probs(0.8)
    rejections = sum(sign_flip_p(rng.choice(6, size=40, p=probs) - rng.choice(6, size=40, p=probs)) < 0.05
                     for _ in range(1000))
    assert 0.02 <= rejections / 1000 <= 0.06


def test_chains_needed_gives_the_promised_power():
    """A run of per-subtask success 0.85 against 0.80: with units_needed(sd, true difference) paired chains,
    the exact test rejects in about 80 % of simulated experiments."""
    pa, pb = chain_length_probs(0.80), chain_length_probs(0.85)
    delta = float((pb - pa) @ np.arange(6))
    sd = math.sqrt(float(pa @ np.arange(6) ** 2 - (pa @ np.arange(6)) ** 2 + pb @ np.arange(6) ** 2 - (pb @ np.arange(6)) ** 2))
    n = units_needed(sd, delta)
    assert 100 < n < 1000
    rng = np.random.default_rng(5)
    power = np.mean([sign_flip_p(rng.choice(6, size=n, p=pb) - rng.choice(6, size=n, p=pa)) < 0.05 for _ in range(300)])
    assert 0.72 <= power <= 0.88, power
    assert units_needed(0.0, 0.1) is None
    assert units_needed(1.0, 5.0) == 6 and sign_flip_p([1] * 6) < 0.05 <= sign_flip_p([1] * 5)  # the exact test's floor
    with pytest.raises(ValueError):
        units_needed(1.0, 0.0)


def test_paired_difference_and_newcombe():
    a, b = [5, 5, 5, 5, 5, 5, 5, 5, 3, 2], [0, 0, 0, 0, 0, 0, 5, 5, 3, 2]
    d = paired(a, b, most=5)
    assert d.difference == pytest.approx(-3.0) and d.n == 10 and d.p_value == pytest.approx(2 / 2**6)
    assert d.significant() and d.interval.high < 0 and d.interval.low >= -5
    assert d.sd == pytest.approx(np.std(np.subtract(b, a), ddof=1))
    with pytest.raises(ValueError, match="equally many"):
        paired([1, 2], [1])
    # Newcombe's hybrid score interval from the two Wilson intervals, by hand
    wa, wb = wilson(5, 10), wilson(9, 10)
    interval = newcombe(5, 10, 9, 10)
    assert interval.low == pytest.approx(0.4 - math.sqrt((0.9 - wb.low) ** 2 + (wa.high - 0.5) ** 2))
    assert interval.high == pytest.approx(0.4 + math.sqrt((wb.high - 0.9) ** 2 + (0.5 - wa.low) ** 2))
    assert newcombe(0, 0, 1, 2) is None


def test_results_carry_intervals_keyed_as_calvins_numbers():
    s = summarize(RECORDS, "chains")  # completed per chain: 0, 2, 5, 1
    intervals = s["intervals"]
    assert intervals == chain_intervals([0, 2, 5, 1], s["task_info"])
    assert set(intervals["chain_sr"]) == set(s["chain_sr"]) and set(intervals["task_info"]) == set(s["task_info"])
    assert intervals["chain_sr"]["1"] == wilson(3, 4).to_dict() and intervals["task_info"]["open_drawer"] == wilson(2, 4).to_dict()
    assert intervals["avg_seq_len"] == bootstrap_mean([0, 2, 5, 1]).to_dict()
    assert "BCa" in intervals["method"]["avg_seq_len"] and intervals["level"] == 0.95
    assert chain_intervals([], {})["avg_seq_len"] is None and chain_intervals([], {})["chain_sr"]["1"] is None
    single = rate_intervals({"open_drawer": {"success": 1, "total": 2}, "turn_on_led": {"success": 1, "total": 1}})
    assert single["success_rate"] == wilson(2, 3).to_dict() and single["tasks"]["open_drawer"] == wilson(1, 2).to_dict()


def _pairs(both: int, b_only: int, a_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [0] * b_only + [1] * a_only + [0] * neither)
    b = np.array([1] * both + [1] * b_only + [0] * a_only + [0] * neither)
    return a, b


def test_the_paired_interval_of_yes_no_outcomes_is_newcombes_and_agrees_with_the_exact_test():
    """Newcombe's paired score interval (method 10, with his continuity-corrected phi): the published worked example
    (Altman et al., Statistics with Confidence, 2nd ed., table 6.2: 14 both, 5 only one way, 22 neither, as in the
    reference implementations); 4 of 50 chains differing all one way (exact McNemar p = 0.125) must not give an
    interval that excludes 0, with or without chains that fail in both (the bootstrap of the differences gave
    [-0.18, -0.02], the uncorrected phi [-0.188, -0.001]); two runs at 0 of 1000 get Wilson's width, not [0, 0]."""
    published = paired(*_pairs(14, 5, 0, 22)).interval
    assert (round(published.low, 3), round(published.high, 3)) == (0.011, 0.226)
    for table in ((46, 0, 4, 0), (45, 0, 4, 1), (44, 0, 4, 2)):
        d = paired(*_pairs(*table))
        assert d.p_value == pytest.approx(0.125) and d.interval.low < 0 < d.interval.high, table
    both_zero = paired(np.zeros(1000), np.zeros(1000)).interval
    assert both_zero.high == pytest.approx(wilson(0, 1000).high) and both_zero.low == pytest.approx(-both_zero.high)


def test_values_outside_their_range_are_refused():
    with pytest.raises(ValueError, match="from 0 to most=1"):
        paired([3, 3, 3], [5, 5, 5])
    with pytest.raises(ValueError, match=r"within bounds \(0, 5\)"):
        bootstrap_mean([7, 7, 7], bounds=(0, 5))
