"""Statistics for comparing classifiers: the right test for each question.

Three questions, three tests; each function says which it answers.

- **Does method B beat method A when trained again?** (a method claim) The unit is the training
  seed: :func:`seed_test` is a paired t-test of the per-seed top-1 differences with a t-based
  CI, plus an exact sign-flip permutation test as a second opinion when seeds are few. Below
  :data:`MIN_SEEDS` seeds, or when every seed gives the same difference, it gives no p-value and
  says why. :func:`power` and :func:`seeds_needed` say how many seeds a difference needs.
- **Do these trained networks differ on a random test image?** (a claim about the networks, not
  the method) One pair of networks on the same images: the exact McNemar test
  (:func:`mcnemar`) with a CI of the difference (:func:`mcnemar_interval`). Several seeds of
  each on the same images: :func:`clustered_test`, which treats each image as a cluster over the
  seeds (pooling the discordant counts instead, as an earlier version did, counts every (seed,
  image) as independent and is overconfident).
- **How sure is one network's top-1, or one pair's difference?** Percentile bootstrap over the
  images (:func:`top1_interval`, :func:`difference_interval`), as the promotion uses it. Over
  seeds and images, :func:`top1_bootstrap` and :func:`difference_bootstrap` say how many seeds
  they rest on; below :data:`MIN_BOOTSTRAP_SEEDS` they are not a method-level interval
  (resampling S seeds keeps (S-1)/S of their variance and uses normal, not t, quantiles).

Conventions: ``a`` is the reference (baseline, champion), ``b`` the challenger; differences are
``b - a``; accuracies are fractions in [0, 1]; bootstrap intervals use a fixed generator seed,
so a figure is reproducible. scipy (a dependency of scikit-learn) is imported where needed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from onedge.errors import ConfigError

DEFAULT_RESAMPLES = 10_000
MIN_SEEDS = 3  # fewer seeds: no method-level p-value
MIN_BOOTSTRAP_SEEDS = 10  # fewer seeds: a seeds x images bootstrap is no method-level CI
MAX_SIGN_FLIP_SEEDS = 16  # the exact sign-flip test enumerates 2^seeds sign patterns
MAX_SEEDS_NEEDED = 1000  # seeds_needed gives None beyond this


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: ``b_only`` images only b gets right, ``a_only`` only a gets right."""

    a_only: int
    b_only: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class SeedTest:
    """Method B against method A over training seeds: per-seed top-1 differences (b - a).

    ``low``/``high``: t-based CI of the mean difference; ``p_value``: paired t-test;
    ``sign_flip_p``: exact sign-flip permutation test (3 to 16 seeds); ``sd``: sample SD of the
    per-seed differences. ``reason`` says why a p-value is missing (too few seeds, no variance).
    """

    mean: float
    low: float | None
    high: float | None
    p_value: float | None
    seeds: int
    sd: float | None = None
    sign_flip_p: float | None = None
    reason: str | None = None
    level: float = 0.95

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class SeedMean:
    """Mean of a per-seed figure (top-1) with a t-based CI over the seeds."""

    estimate: float
    low: float | None
    high: float | None
    seeds: int
    sd: float | None
    level: float = 0.95

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class ClusteredTest:
    """These networks (seeds x images) on a random test image, images clustered over seeds.

    ``variance_ratio``: the clustered variance of the mean difference over the variance that
    pooling every (seed, image) as independent would give (above 1: pooling is overconfident).
    """

    estimate: float
    low: float | None
    high: float | None
    p_value: float | None
    seeds: int
    images: int
    variance_ratio: float | None
    reason: str | None = None
    level: float = 0.95

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapCI:
    """A seeds x images percentile bootstrap interval and the number of seeds it rests on."""

    interval: Interval
    seeds: int

    @property
    def method_level(self) -> bool:
        """Whether it may stand for the method (enough seeds), not only for these networks."""
        return self.seeds >= MIN_BOOTSTRAP_SEEDS

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**self.interval.to_dict(), "seeds": self.seeds, "method_level": self.method_level}


def _correct(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"{name}: need a non-empty 1-D array of per-image correctness")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ConfigError(f"{name}: per-image correctness must be 0/1 or boolean")
    return array.astype(bool)


def _pair(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    a_, b_ = _correct(a, "a"), _correct(b, "b")
    if a_.shape != b_.shape:
        raise ConfigError(
            f"paired statistics need the same images: a has {a_.size}, b has {b_.size}"
        )
    return a_, b_


def _matrices(a, b) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, images) float matrices of a and b, seed i of a paired with seed i of b."""
    a_m = np.atleast_2d(np.asarray(a)).astype(float)
    b_m = np.atleast_2d(np.asarray(b)).astype(float)
    if a_m.shape != b_m.shape or a_m.ndim != 2 or a_m.size == 0:
        raise ConfigError(f"paired difference needs equal shapes, got {a_m.shape} and {b_m.shape}")
    return a_m, b_m


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips: 2 P(X <= min(k, n-k))."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test of two networks on the same images: a binomial test on the discordant
    images. It answers "do these two networks differ on a random image", not a method question."""
    a_, b_ = _pair(a, b)
    a_only, b_only = int((a_ & ~b_).sum()), int((b_ & ~a_).sum())
    return McNemar(a_only, b_only, binomial_two_sided(b_only, a_only + b_only))


def mcnemar_interval(a: Sequence[bool], b: Sequence[bool], level: float = 0.95) -> Interval:
    """top-1(b) - top-1(a) of two networks on the same images with the Wald interval for
    paired proportions: se = sqrt(b_only + a_only - (b_only - a_only)^2 / n) / n."""
    from scipy import stats as sps

    _check_level(level, DEFAULT_RESAMPLES)
    a_, b_ = _pair(a, b)
    n = a_.size
    a_only, b_only = int((a_ & ~b_).sum()), int((b_ & ~a_).sum())
    diff = (b_only - a_only) / n
    se = math.sqrt(max(0.0, b_only + a_only - (b_only - a_only) ** 2 / n)) / n
    half = float(sps.norm.ppf(0.5 + level / 2)) * se
    return Interval(diff, diff - half, diff + half, level)


def clustered_test(a, b, level: float = 0.95) -> ClusteredTest:
    """These networks on a random test image: seeds x images with images as clusters.

    ``a`` and ``b`` are (seeds, images) per-image correctness, seed i of a paired with seed i of
    b, every seed on the same images. Per image j the differences are summed over the seeds,
    d_j = sum_s (b_sj - a_sj); the mean difference is mean(d) / seeds, and its standard error
    comes from the spread of the d_j over images (sd(d) / sqrt(images) / seeds), so the seeds'
    correlation on an image (an easy image is easy for every seed) is kept, not counted as
    independent evidence. The test is a one-sample t-test of the d_j (images - 1 degrees of
    freedom). The training seeds are held fixed: this is about these networks, not the method.
    """
    from scipy import stats as sps

    a_m, b_m = _matrices(a, b)
    seeds, images = a_m.shape
    diff = b_m - a_m
    summed = diff.sum(axis=0)
    estimate = float(summed.mean() / seeds)
    if images < 2 or np.ptp(summed) == 0:
        why = "no image differs" if not summed.any() else "every image differs by as much"
        return ClusteredTest(estimate, None, None, None, seeds, images, None, why, level)
    se = float(summed.std(ddof=1) / math.sqrt(images) / seeds)
    pooled_se = float(diff.std(ddof=1) / math.sqrt(diff.size))
    t = sps.t(df=images - 1)
    half = float(t.ppf(0.5 + level / 2) * se)
    p = float(2 * t.sf(abs(estimate) / se))
    ratio = (se / pooled_se) ** 2 if pooled_se > 0 else None
    return ClusteredTest(estimate, estimate - half, estimate + half, p, seeds, images, ratio)


def _percentile(samples: np.ndarray, estimate: float, level: float) -> Interval:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level)


def _check_level(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if resamples < 100:
        raise ConfigError(f"need at least 100 bootstrap resamples, got {resamples}")


def _bootstrap_mean(matrix: np.ndarray, level: float, resamples: int, seed: int) -> Interval:
    """Percentile bootstrap of the mean of a (seeds, images) matrix: each resample draws seeds
    with replacement and images with replacement (one image draw shared by the seeds)."""
    _check_level(level, resamples)
    rng = np.random.default_rng(seed)
    samples = np.empty(resamples)
    s, n = matrix.shape
    for i in range(resamples):
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, dtype=np.int64)
        cols = rng.integers(0, n, n)
        samples[i] = matrix[np.ix_(rows, cols)].mean()
    return _percentile(samples, matrix.mean(), level)


def top1_interval(
    correct: Sequence[bool] | np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Top-1 with a percentile bootstrap CI; ``correct`` is (images,) or (seeds, images).

    For one network this is the CI over the test images. Over seeds see :func:`top1_bootstrap`.
    """
    matrix = np.atleast_2d(np.asarray(correct)).astype(float)
    return _bootstrap_mean(matrix, level, resamples, seed)


def difference_interval(
    a: Sequence[bool] | np.ndarray,
    b: Sequence[bool] | np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """top-1(b) - top-1(a) with a paired bootstrap CI; (images,) or (seeds, images) arrays.

    Seed i of a is paired with seed i of b; resamples draw seed indices and image indices once
    and apply them to both, so the pairing is kept.
    """
    a_m, b_m = _matrices(a, b)
    return _bootstrap_mean(b_m - a_m, level, resamples, seed)


def top1_bootstrap(correct, *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES):
    """:func:`top1_interval` over (seeds, images), with the seeds it rests on."""
    matrix = np.atleast_2d(np.asarray(correct))
    return BootstrapCI(top1_interval(matrix, level=level, resamples=resamples), matrix.shape[0])


def difference_bootstrap(a, b, *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES):
    """:func:`difference_interval` over (seeds, images), with the seeds it rests on."""
    interval = difference_interval(a, b, level=level, resamples=resamples)
    return BootstrapCI(interval, np.atleast_2d(np.asarray(a)).shape[0])


def seed_mean(values: Sequence[float], level: float = 0.95) -> SeedMean:
    """Mean of a per-seed figure with a t-based CI (none below :data:`MIN_SEEDS` seeds or with
    no spread). The seeds are scored on the same test images, so this is training-seed spread."""
    from scipy import stats as sps

    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ConfigError("seed_mean needs a non-empty list of per-seed values")
    mean = float(x.mean())
    if x.size < 2:
        return SeedMean(mean, None, None, 1, None, level)
    sd = float(x.std(ddof=1))
    if x.size < MIN_SEEDS or np.ptp(x) == 0:
        return SeedMean(mean, None, None, int(x.size), sd, level)
    half = float(sps.t(df=x.size - 1).ppf(0.5 + level / 2) * sd / math.sqrt(x.size))
    return SeedMean(mean, mean - half, mean + half, int(x.size), sd, level)


def sign_flip_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation test of per-seed differences (mean 0 under H0).

    Every one of the 2^n sign patterns is enumerated; p is the share whose |sum| is at least the
    observed |sum|. With n seeds the smallest p is 2 / 2^n (0.25 at 3 seeds, 0.0625 at 5).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or not 1 <= d.size <= MAX_SIGN_FLIP_SEEDS:
        raise ConfigError(f"sign_flip_test needs 1 to {MAX_SIGN_FLIP_SEEDS} differences")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    sums = np.abs(signs @ d)
    observed = abs(float(d.sum()))
    return float(np.mean(sums >= observed - 1e-12 * max(1.0, observed)))


def seed_test(a_top1: Sequence[float], b_top1: Sequence[float], level: float = 0.95) -> SeedTest:
    """Method B against method A over seeds: paired t-test of per-seed top-1 (seed i trained a
    and b on the same split) with a t-based CI, and the exact sign-flip test as a second
    opinion. Below :data:`MIN_SEEDS` seeds: no p-value and no CI. Every seed's difference equal
    (no variance): no t-test, no CI, the reason given; the sign-flip p is still exact."""
    from scipy import stats as sps

    a_, b_ = np.asarray(a_top1, dtype=float), np.asarray(b_top1, dtype=float)
    if a_.shape != b_.shape or a_.ndim != 1 or a_.size == 0:
        raise ConfigError("seed_test needs two equal-length, non-empty lists of per-seed top-1")
    diff = b_ - a_
    n, mean = int(diff.size), float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else None
    if n < MIN_SEEDS:
        why = f"{n} seed{'s' if n > 1 else ''}: a method-level test needs at least {MIN_SEEDS}"
        return SeedTest(mean, None, None, None, n, sd, None, why, level)
    flip = sign_flip_test(diff) if n <= MAX_SIGN_FLIP_SEEDS else None
    if np.ptp(diff) <= 1e-12:
        why = f"every seed's difference is {mean:+.4g}: no variance, the t-test is undefined"
        return SeedTest(mean, None, None, None, n, 0.0, flip, why, level)
    sem = sd / math.sqrt(n)
    t = sps.t(df=n - 1)
    half = float(t.ppf(0.5 + level / 2) * sem)
    p = float(2 * t.sf(abs(mean) / sem))
    return SeedTest(mean, mean - half, mean + half, p, n, sd, flip, None, level)


def power(effect: float, sd: float, seeds: int, level: float = 0.95) -> float:
    """Power of the two-sided paired t-test (alpha = 1 - level) over ``seeds`` seeds to find a
    true mean difference ``effect`` when per-seed differences have standard deviation ``sd``
    (noncentral t with seeds - 1 degrees of freedom)."""
    from scipy import stats as sps

    if sd <= 0 or seeds < 2:
        raise ConfigError(f"power needs sd > 0 and at least 2 seeds, got sd={sd}, seeds={seeds}")
    df = seeds - 1
    crit = float(sps.t.ppf(0.5 + level / 2, df))
    ncp = abs(effect) / sd * math.sqrt(seeds)
    p = float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))
    if not math.isfinite(p):  # scipy's noncentral t fails far in the tail: normal there
        p = float(sps.norm.sf(crit - ncp) + sps.norm.cdf(-crit - ncp))
    return p


def seeds_needed(effect: float, sd: float, target: float = 0.8, level: float = 0.95) -> int | None:
    """Fewest seeds whose paired t-test finds ``effect`` with power ``target``; None when more
    than :data:`MAX_SEEDS_NEEDED` (or no effect to find)."""
    if not 0 < target < 1:
        raise ConfigError(f"target power must be in (0, 1), got {target}")
    if effect == 0:
        return None
    high = 2
    while power(effect, sd, high, level) < target:  # double up to a big enough n
        if high >= MAX_SEEDS_NEEDED:
            return None
        high = min(2 * high, MAX_SEEDS_NEEDED)
    low = max(2, high // 2)  # then the first n with enough power
    while low < high:
        mid = (low + high) // 2
        if power(effect, sd, mid, level) >= target:
            high = mid
        else:
            low = mid + 1
    return low


def power_summary(test: SeedTest, effect: float | None = None) -> dict[str, float | int | None]:
    """Seeds needed at 80% and 90% power, and the power the current seeds have, for ``effect``
    (default: the observed mean difference) at the observed SD of a :class:`SeedTest`."""
    effect = test.mean if effect is None else effect
    if not test.sd or test.seeds < 2 or effect == 0:
        return {"effect": effect, "sd": test.sd, "power": None, "seeds_80": None, "seeds_90": None}
    return {
        "effect": effect,
        "sd": test.sd,
        "power": power(effect, test.sd, test.seeds, test.level),
        "seeds_80": seeds_needed(effect, test.sd, 0.8, test.level),
        "seeds_90": seeds_needed(effect, test.sd, 0.9, test.level),
    }


def median_difference_interval(
    a_samples: Sequence[float],
    b_samples: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = 2_000,
    seed: int = 0,
) -> Interval:
    """median(b) - median(a) of two independent timing samples, with a bootstrap CI."""
    _check_level(level, resamples)
    a_, b_ = np.asarray(a_samples, dtype=float), np.asarray(b_samples, dtype=float)
    if a_.ndim != 1 or b_.ndim != 1 or a_.size < 2 or b_.size < 2:
        raise ConfigError("median_difference_interval needs two samples of at least 2 timings")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a_.size, (resamples, a_.size))
    ib = rng.integers(0, b_.size, (resamples, b_.size))
    samples = np.median(b_[ib], axis=1) - np.median(a_[ia], axis=1)
    return _percentile(samples, float(np.median(b_) - np.median(a_)), level)
