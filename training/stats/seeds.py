"""Method claims, where the unit is the training seed: the paired t-test of per-seed top-1
differences with the exact sign-flip test beside it, a per-seed mean with its CI, and the power
and seeds a difference needs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from onedge.errors import ConfigError

MIN_SEEDS = 3  # fewer seeds: no method-level p-value
MAX_SIGN_FLIP_SEEDS = 16  # the exact sign-flip test enumerates 2^seeds sign patterns
MAX_SEEDS_NEEDED = 1000  # seeds_needed gives None beyond this


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
