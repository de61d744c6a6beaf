"""Paired statistics for comparing classifiers on the same images.

Pure functions over per-image correctness (boolean arrays, one entry per test image, the same
images in the same order for both models). They answer two questions a promotion or a benchmark
must answer before it says "better":
- is the difference in top-1 real? The exact McNemar test on the discordant images, and a
  bootstrap confidence interval of the difference;
- how sure is a top-1 figure? A bootstrap confidence interval over images (and over seeds when
  several training seeds were run on the same split).

Conventions: ``a`` is the reference (baseline, champion), ``b`` the challenger; differences are
``b - a``; accuracies are fractions in [0, 1]; intervals are percentile bootstrap intervals with a
fixed generator seed, so a figure is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from onedge.errors import ConfigError

DEFAULT_RESAMPLES = 10_000


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
    """Paired t-test over seeds of the per-seed top-1 differences (b - a)."""

    mean: float
    low: float | None
    high: float | None
    p_value: float | None  # None with fewer than two seeds
    seeds: int

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


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


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips: 2 P(X <= min(k, n-k))."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test of a and b on the same images: binomial test on the discordant pairs."""
    a_, b_ = _pair(a, b)
    a_only, b_only = int((a_ & ~b_).sum()), int((b_ & ~a_).sum())
    return McNemar(a_only, b_only, binomial_two_sided(b_only, a_only + b_only))


def pooled_mcnemar(pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]]) -> McNemar:
    """McNemar over several seeds: the discordant counts of every (a, b) seed pair summed.

    Each pair is one seed of a and one seed of b scored on the same images.
    """
    if not pairs:
        raise ConfigError("pooled_mcnemar needs at least one (a, b) pair")
    tests = [mcnemar(a, b) for a, b in pairs]
    a_only, b_only = sum(t.a_only for t in tests), sum(t.b_only for t in tests)
    return McNemar(a_only, b_only, binomial_two_sided(b_only, a_only + b_only))


def _percentile(samples: np.ndarray, estimate: float, level: float) -> Interval:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level)


def _check_level(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if resamples < 100:
        raise ConfigError(f"need at least 100 bootstrap resamples, got {resamples}")


def top1_interval(
    correct: Sequence[bool] | np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Top-1 with a bootstrap CI. ``correct`` is (images,) or (seeds, images) on the same images.

    With several seeds, each resample draws seeds with replacement and images with replacement
    (one image draw shared by the seeds, as they were scored on the same images), so the interval
    holds both training noise and the finite test set.
    """
    _check_level(level, resamples)
    matrix = np.atleast_2d(np.asarray(correct)).astype(float)
    rng = np.random.default_rng(seed)
    samples = np.empty(resamples)
    s, n = matrix.shape
    for i in range(resamples):
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, dtype=np.int64)
        cols = rng.integers(0, n, n)
        samples[i] = matrix[np.ix_(rows, cols)].mean()
    return _percentile(samples, matrix.mean(), level)


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
    _check_level(level, resamples)
    a_m = np.atleast_2d(np.asarray(a)).astype(float)
    b_m = np.atleast_2d(np.asarray(b)).astype(float)
    if a_m.shape != b_m.shape:
        raise ConfigError(f"paired difference needs equal shapes, got {a_m.shape} and {b_m.shape}")
    diff = b_m - a_m
    rng = np.random.default_rng(seed)
    s, n = diff.shape
    samples = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, dtype=np.int64)
        cols = rng.integers(0, n, n)
        samples[i] = diff[np.ix_(rows, cols)].mean()
    return _percentile(samples, diff.mean(), level)


def seed_test(a_top1: Sequence[float], b_top1: Sequence[float], level: float = 0.95) -> SeedTest:
    """Paired t-test across seeds: seed i trained a and b on the same split."""
    from scipy import stats as sps

    a_, b_ = np.asarray(a_top1, dtype=float), np.asarray(b_top1, dtype=float)
    if a_.shape != b_.shape or a_.ndim != 1 or a_.size == 0:
        raise ConfigError("seed_test needs two equal-length, non-empty lists of per-seed top-1")
    diff = b_ - a_
    mean = float(diff.mean())
    if diff.size < 2:
        return SeedTest(mean, None, None, None, int(diff.size))
    sem = float(diff.std(ddof=1) / math.sqrt(diff.size))
    if sem == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return SeedTest(mean, mean, mean, p, int(diff.size))
    t = sps.t(df=diff.size - 1)
    half = float(t.ppf(0.5 + level / 2) * sem)
    p = float(2 * t.sf(abs(mean) / sem))
    return SeedTest(mean, mean - half, mean + half, p, int(diff.size))


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
