"""Golden values for the paired statistics (training/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from onedge.errors import ConfigError
from training.stats import (
    binomial_two_sided,
    difference_interval,
    mcnemar,
    median_difference_interval,
    pooled_mcnemar,
    seed_test,
    top1_interval,
)


def table(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness arrays with the given 2x2 contingency table."""
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_against_a_hand_computed_table() -> None:
    # 1 image only a gets right, 9 only b: n = 10 discordant, p = 2 * (C(10,0) + C(10,1)) / 2^10
    a, b = table(both=80, a_only=1, b_only=9, neither=10)
    test = mcnemar(a, b)
    assert (test.a_only, test.b_only, test.discordant) == (1, 9, 10)
    assert test.p_value == pytest.approx(22 / 1024, abs=1e-12)
    assert mcnemar(b, a).p_value == test.p_value  # symmetric


def test_mcnemar_edge_cases() -> None:
    a, b = table(both=50, a_only=0, b_only=0, neither=5)
    assert mcnemar(a, b).p_value == 1.0  # identical predictions: no evidence
    a, b = table(both=0, a_only=5, b_only=5, neither=0)
    assert mcnemar(a, b).p_value == 1.0
    a, b = table(both=0, a_only=0, b_only=6, neither=0)
    assert mcnemar(a, b).p_value == pytest.approx(2 / 64)  # 2 * 0.5^6


def test_binomial_matches_scipy() -> None:
    from scipy.stats import binomtest

    for k, n in [(3, 20), (10, 20), (0, 7), (40, 100), (7, 7)]:
        assert binomial_two_sided(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_pooled_mcnemar_sums_the_seeds() -> None:
    pairs = [table(50, 2, 5, 3), table(50, 1, 6, 3), table(50, 3, 4, 3)]
    pooled = pooled_mcnemar(pairs)
    assert (pooled.a_only, pooled.b_only) == (6, 15)
    assert pooled.p_value == pytest.approx(binomial_two_sided(15, 21))
    assert pooled.p_value < min(mcnemar(a, b).p_value for a, b in pairs)


def test_mismatched_images_are_refused() -> None:
    with pytest.raises(ConfigError, match="same images"):
        mcnemar([True, False], [True])
    with pytest.raises(ConfigError, match="0/1"):
        mcnemar([0, 2], [1, 1])


def test_bootstrap_top1_interval_covers_the_true_accuracy() -> None:
    rng = np.random.default_rng(7)
    correct = rng.random(4000) < 0.8
    ci = top1_interval(correct, resamples=2000)
    assert ci.estimate == pytest.approx(correct.mean())
    assert ci.covers(0.8)
    half = 1.96 * np.sqrt(0.8 * 0.2 / 4000)  # normal approximation of the binomial
    assert ci.high - ci.low == pytest.approx(2 * half, rel=0.15)
    assert top1_interval(correct, resamples=2000) == ci  # fixed generator: reproducible


def test_bootstrap_over_seeds_is_wider_when_seeds_disagree() -> None:
    rng = np.random.default_rng(1)
    images = 2000
    same = np.tile(rng.random(images) < 0.9, (3, 1))
    spread = np.stack([rng.random(images) < p for p in (0.85, 0.9, 0.95)])
    narrow, wide = top1_interval(same, resamples=1000), top1_interval(spread, resamples=1000)
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)
    assert wide.covers(0.9)


def test_paired_difference_interval() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(5000) < 0.85
    b = a.copy()
    flip = rng.choice(np.flatnonzero(~a), 150, replace=False)  # b fixes 150 of a's errors
    b[flip] = True
    ci = difference_interval(a, b, resamples=2000)
    assert ci.estimate == pytest.approx(150 / 5000)
    assert ci.low > 0 and ci.covers(0.03)
    null = difference_interval(a, a, resamples=500)
    assert (null.estimate, null.low, null.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="equal shapes"):
        difference_interval(a, b[:-1])


def test_seed_test_against_a_hand_computed_t() -> None:
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 3.4641, df 2
    test = seed_test([0.90, 0.90, 0.90], [0.91, 0.92, 0.93])
    assert test.mean == pytest.approx(0.02)
    assert test.p_value == pytest.approx(0.07418, abs=1e-4)  # two-sided t(2) tail at 3.4641
    half = 4.302653 * 0.01 / np.sqrt(3)  # t(2) quantile 0.975
    assert (test.low, test.high) == pytest.approx((0.02 - half, 0.02 + half), abs=1e-6)
    assert seed_test([0.9], [0.91]).p_value is None


def test_median_difference_interval() -> None:
    rng = np.random.default_rng(0)
    fast = rng.normal(1.0, 0.05, 400)
    slow = rng.normal(1.2, 0.05, 400)
    ci = median_difference_interval(fast, slow, resamples=1000)
    assert ci.low > 0.15 and ci.high < 0.25 and ci.covers(0.2)
    same = median_difference_interval(fast, fast + rng.normal(0, 1e-4, 400), resamples=1000)
    assert same.covers(0.0)
