"""These trained networks on a random test image: exact McNemar for one pair on the same images
(with the Wald interval of the difference), and the images-as-clusters test for several seeds
of each. Claims about the networks, not the method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from training.stats.paired import (
    DEFAULT_RESAMPLES,
    Interval,
    check_level,
    paired_correctness,
    paired_matrices,
)


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
    a_, b_ = paired_correctness(a, b)
    a_only, b_only = int((a_ & ~b_).sum()), int((b_ & ~a_).sum())
    return McNemar(a_only, b_only, binomial_two_sided(b_only, a_only + b_only))


def mcnemar_interval(a: Sequence[bool], b: Sequence[bool], level: float = 0.95) -> Interval:
    """top-1(b) - top-1(a) of two networks on the same images with the Wald interval for
    paired proportions: se = sqrt(b_only + a_only - (b_only - a_only)^2 / n) / n."""
    from scipy import stats as sps

    check_level(level, DEFAULT_RESAMPLES)
    a_, b_ = paired_correctness(a, b)
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

    a_m, b_m = paired_matrices(a, b)
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
