"""Percentile bootstrap intervals over test images (and seeds): one network's top-1, a pair's
difference, the seeds a seeds x images interval rests on, and the difference of two timing
medians."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onedge.errors import ConfigError
from training.stats.paired import (
    DEFAULT_RESAMPLES,
    Interval,
    check_level,
    paired_matrices,
    percentile_interval,
)

MIN_BOOTSTRAP_SEEDS = 10  # fewer seeds: a seeds x images bootstrap is no method-level CI


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


def bootstrap_mean(matrix: np.ndarray, level: float, resamples: int, seed: int) -> Interval:
    """Percentile bootstrap of the mean of a (seeds, images) matrix: each resample draws seeds
    with replacement and images with replacement (one image draw shared by the seeds)."""
    check_level(level, resamples)
    rng = np.random.default_rng(seed)
    samples = np.empty(resamples)
    s, n = matrix.shape
    for i in range(resamples):
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, dtype=np.int64)
        cols = rng.integers(0, n, n)
        samples[i] = matrix[np.ix_(rows, cols)].mean()
    return percentile_interval(samples, matrix.mean(), level)


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
    return bootstrap_mean(matrix, level, resamples, seed)


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
    a_m, b_m = paired_matrices(a, b)
    return bootstrap_mean(b_m - a_m, level, resamples, seed)


def top1_bootstrap(correct, *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES):
    """:func:`top1_interval` over (seeds, images), with the seeds it rests on."""
    matrix = np.atleast_2d(np.asarray(correct))
    return BootstrapCI(top1_interval(matrix, level=level, resamples=resamples), matrix.shape[0])


def difference_bootstrap(a, b, *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES):
    """:func:`difference_interval` over (seeds, images), with the seeds it rests on."""
    interval = difference_interval(a, b, level=level, resamples=resamples)
    return BootstrapCI(interval, np.atleast_2d(np.asarray(a)).shape[0])


def median_difference_interval(
    a_samples: Sequence[float],
    b_samples: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = 2_000,
    seed: int = 0,
) -> Interval:
    """median(b) - median(a) of two independent timing samples, with a bootstrap CI."""
    check_level(level, resamples)
    a_, b_ = np.asarray(a_samples, dtype=float), np.asarray(b_samples, dtype=float)
    if a_.ndim != 1 or b_.ndim != 1 or a_.size < 2 or b_.size < 2:
        raise ConfigError("median_difference_interval needs two samples of at least 2 timings")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a_.size, (resamples, a_.size))
    ib = rng.integers(0, b_.size, (resamples, b_.size))
    samples = np.median(b_[ib], axis=1) - np.median(a_[ia], axis=1)
    return percentile_interval(samples, float(np.median(b_) - np.median(a_)), level)
