"""Golden values for the paired statistics (training/stats/)."""

from __future__ import annotations

import numpy as np
import pytest

from onedge.errors import ConfigError
from training.stats import (
    MIN_BOOTSTRAP_SEEDS,
    binomial_two_sided,
    clustered_test,
    difference_bootstrap,
    difference_interval,
    mcnemar,
    mcnemar_interval,
    median_difference_interval,
    power,
    power_summary,
    seed_mean,
    seed_test,
    seeds_needed,
    sign_flip_test,
    top1_bootstrap,
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
    assert test.sd == pytest.approx(0.01) and test.reason is None
    assert test.sign_flip_p == pytest.approx(0.25)  # 2 of the 8 sign patterns reach |sum| 0.06


def test_seed_test_against_scipy() -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(5)
    for n in (3, 5, 8, 20):
        a, b = 0.89 + rng.normal(0, 0.007, n), 0.895 + rng.normal(0, 0.007, n)
        test, ref = seed_test(a, b), sps.ttest_rel(b, a)
        assert test.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        ci = ref.confidence_interval(0.95)
        assert (test.low, test.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert (test.sign_flip_p is None) == (n > 16)


def test_few_seeds_give_no_p_value_and_say_so() -> None:
    one = seed_test([0.9], [0.91])
    assert (one.p_value, one.low, one.sign_flip_p, one.seeds) == (None, None, None, 1)
    assert "1 seed: a method-level test needs at least 3" in one.reason
    two = seed_test([0.90, 0.91], [0.92, 0.95])
    assert (two.p_value, two.low, two.high) == (None, None, None)
    assert two.mean == pytest.approx(0.03) and "2 seeds" in two.reason
    assert seed_mean([0.9, 0.92]).low is None


def test_zero_variance_gives_no_p_value_and_a_reason() -> None:
    # every seed +1 point: the old test said p = 0 with a zero-width CI
    test = seed_test([0.90, 0.88, 0.91], [0.91, 0.89, 0.92])
    assert test.p_value is None and test.low is None and test.high is None
    assert test.sd == 0.0 and "no variance" in test.reason
    assert test.sign_flip_p == pytest.approx(0.25)  # exact all the same: 2 / 2^3
    assert seed_test([0.9] * 3, [0.9] * 3).sign_flip_p == 1.0
    assert power_summary(test)["seeds_80"] is None


def test_sign_flip_against_scipy_permutation_test() -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(2)
    for n in (3, 5, 8):
        d = rng.normal(0.3, 1.0, n)
        ref = sps.permutation_test(
            (d,), np.mean, permutation_type="samples", n_resamples=np.inf
        ).pvalue
        assert sign_flip_test(d) == pytest.approx(ref, rel=1e-9)
    assert sign_flip_test([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)
    with pytest.raises(ConfigError, match="1 to 16"):
        sign_flip_test(np.ones(17))


def test_seed_mean_is_the_t_interval() -> None:
    from scipy import stats as sps

    x = [0.888, 0.894, 0.901, 0.897]
    m = seed_mean(x)
    ci = sps.t.interval(0.95, 3, loc=np.mean(x), scale=sps.sem(x))
    assert (m.estimate, m.low, m.high) == pytest.approx((np.mean(x), *ci), rel=1e-9)
    assert m.seeds == 4


def test_power_against_g_power_tables() -> None:
    # one-sample/paired t, two-sided alpha 0.05 (G*Power): d = 0.5 -> 34, 0.8 -> 15, 1 -> 10
    assert power(0.5, 1.0, 34) == pytest.approx(0.8078, abs=1e-4)
    assert [seeds_needed(d, 1.0) for d in (0.5, 0.8, 1.0)] == [34, 15, 10]
    assert seeds_needed(0.5, 1.0, target=0.9) == 44
    # the case: +0.5 points with a per-seed SD of 0.7 points
    assert seeds_needed(0.005, 0.007) == 18
    assert power(0.005, 0.007, 3) == pytest.approx(0.118, abs=1e-3)  # about 1 time in 8
    assert seeds_needed(0.0001, 0.01) is None  # more than 1000
    assert seeds_needed(0.0, 0.01) is None
    summary = power_summary(seed_test([0.90, 0.90, 0.90], [0.91, 0.92, 0.93]))
    assert summary["seeds_80"] == seeds_needed(0.02, 0.01) and summary["seeds_90"] > 3
    with pytest.raises(ConfigError, match="sd > 0"):
        power(0.01, 0.0, 5)


def test_clustered_test_sums_each_image_over_the_seeds() -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(4)
    easy = rng.random(3000) < 0.85  # the same images are easy for every seed
    a = np.stack([easy & (rng.random(3000) < 0.97) for _ in range(4)])
    b = np.stack([easy & (rng.random(3000) < 0.98) for _ in range(4)])
    test = clustered_test(a, b)
    summed = (b.astype(float) - a).sum(axis=0)
    ref = sps.ttest_1samp(summed, 0.0)
    assert test.estimate == pytest.approx(b.mean() - a.mean())
    assert test.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (test.low, test.high) == pytest.approx((ci.low / 4, ci.high / 4), rel=1e-9)
    assert (test.seeds, test.images) == (4, 3000)
    # one seed: the same as a paired t-test of the per-image differences
    one = clustered_test(a[0], b[0])
    assert one.p_value == pytest.approx(sps.ttest_rel(b[0] * 1.0, a[0] * 1.0).pvalue, rel=1e-9)
    # an image's seeds move together: clustering widens the variance, pooling understates it
    a4, b4 = np.tile(a[0], (4, 1)), np.tile(b[0], (4, 1))
    same = clustered_test(a4, b4)
    assert same.variance_ratio == pytest.approx(4.0, rel=1e-3)
    assert same.p_value == pytest.approx(one.p_value)  # four copies are one network's evidence
    # pooling the discordant images of the four copies as independent: 4x the evidence
    a_only, b_only = 4 * int((a[0] & ~b[0]).sum()), 4 * int((b[0] & ~a[0]).sum())
    assert binomial_two_sided(b_only, a_only + b_only) < same.p_value / 10
    none = clustered_test(a, a)
    assert (none.p_value, none.reason) == (None, "no image differs")


def test_mcnemar_interval_against_a_hand_computed_table() -> None:
    # n = 100, 9 only b, 1 only a: d = 0.08, se = sqrt(10 - 64 / 100) / 100 = 0.030594
    a, b = table(both=80, a_only=1, b_only=9, neither=10)
    ci = mcnemar_interval(a, b)
    half = 1.959964 * np.sqrt(10 - 0.64) / 100
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.08, 0.08 - half, 0.08 + half))
    assert mcnemar_interval(a, a).low == 0.0


def test_bootstrap_says_how_many_seeds_it_rests_on() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.random((3, 500)) < 0.8, rng.random((3, 500)) < 0.82
    boot = difference_bootstrap(a, b, resamples=200)
    assert boot.seeds == 3 and not boot.method_level
    assert boot.to_dict()["method_level"] is False and boot.to_dict()["seeds"] == 3
    assert boot.interval == difference_interval(a, b, resamples=200)
    many = top1_bootstrap(rng.random((MIN_BOOTSTRAP_SEEDS, 50)) < 0.8, resamples=200)
    assert many.method_level


def test_median_difference_interval() -> None:
    rng = np.random.default_rng(0)
    fast = rng.normal(1.0, 0.05, 400)
    slow = rng.normal(1.2, 0.05, 400)
    ci = median_difference_interval(fast, slow, resamples=1000)
    assert ci.low > 0.15 and ci.high < 0.25 and ci.covers(0.2)
    same = median_difference_interval(fast, fast + rng.normal(0, 1e-4, 400), resamples=1000)
    assert same.covers(0.0)
