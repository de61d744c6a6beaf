"""Paired inputs and the interval every statistic returns: shared by the tests of networks
and of methods."""

from __future__ import annotations

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


def correctness(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"{name}: need a non-empty 1-D array of per-image correctness")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ConfigError(f"{name}: per-image correctness must be 0/1 or boolean")
    return array.astype(bool)


def paired_correctness(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    a_, b_ = correctness(a, "a"), correctness(b, "b")
    if a_.shape != b_.shape:
        raise ConfigError(
            f"paired statistics need the same images: a has {a_.size}, b has {b_.size}"
        )
    return a_, b_


def paired_matrices(a, b) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, images) float matrices of a and b, seed i of a paired with seed i of b."""
    a_m = np.atleast_2d(np.asarray(a)).astype(float)
    b_m = np.atleast_2d(np.asarray(b)).astype(float)
    if a_m.shape != b_m.shape or a_m.ndim != 2 or a_m.size == 0:
        raise ConfigError(f"paired difference needs equal shapes, got {a_m.shape} and {b_m.shape}")
    return a_m, b_m


def check_level(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if resamples < 100:
        raise ConfigError(f"need at least 100 bootstrap resamples, got {resamples}")


def percentile_interval(samples: np.ndarray, estimate: float, level: float) -> Interval:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level)
