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

Rooms: :mod:`training.stats.seeds` (method claims over seeds, power),
:mod:`training.stats.networks` (McNemar, the clustered test), :mod:`training.stats.bootstrap`
(percentile bootstrap intervals), :mod:`training.stats.paired` (paired inputs, the interval).
"""

from __future__ import annotations

from training.stats.bootstrap import (
    MIN_BOOTSTRAP_SEEDS,
    BootstrapCI,
    difference_bootstrap,
    difference_interval,
    median_difference_interval,
    top1_bootstrap,
    top1_interval,
)
from training.stats.networks import (
    ClusteredTest,
    McNemar,
    binomial_two_sided,
    clustered_test,
    mcnemar,
    mcnemar_interval,
)
from training.stats.paired import (
    DEFAULT_RESAMPLES,
    Interval,
)
from training.stats.seeds import (
    MAX_SEEDS_NEEDED,
    MAX_SIGN_FLIP_SEEDS,
    MIN_SEEDS,
    SeedMean,
    SeedTest,
    power,
    power_summary,
    seed_mean,
    seed_test,
    seeds_needed,
    sign_flip_test,
)

__all__ = [
    "BootstrapCI",
    "ClusteredTest",
    "DEFAULT_RESAMPLES",
    "Interval",
    "MAX_SEEDS_NEEDED",
    "MAX_SIGN_FLIP_SEEDS",
    "MIN_BOOTSTRAP_SEEDS",
    "MIN_SEEDS",
    "McNemar",
    "SeedMean",
    "SeedTest",
    "binomial_two_sided",
    "clustered_test",
    "difference_bootstrap",
    "difference_interval",
    "mcnemar",
    "mcnemar_interval",
    "median_difference_interval",
    "power",
    "power_summary",
    "seed_mean",
    "seed_test",
    "seeds_needed",
    "sign_flip_test",
    "top1_bootstrap",
    "top1_interval",
]
