"""Latency measurement following the benchmark protocol in docs/DESIGN.md.

Warm up by time, then time at least ``min_calls`` calls and at least ``min_seconds``;
report percentiles, never the first call. Candidates are compared inside one process,
interleaved (:func:`interleaved`), and by ratios.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Annotated

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from onedge.strict import StrictModel

PositiveMs = Annotated[float, Field(gt=0.0)]


class Latency(StrictModel):
    """Per-call latency in milliseconds: finite, positive, ordered as percentiles are.

    The one latency model: what an export times (:meth:`from_samples`, written as
    :meth:`to_dict`'s ``p50_ms``, ...), a target report's ``latency_ms`` (``p50``, ..., ``min``,
    ``max``) and what a board's runner reports, which is parsed into it and so checked.
    ``calls`` and ``batch`` say what this process timed; they are not part of a report's
    ``latency_ms`` (a report keeps ``latency_calls`` beside it), so a latency read back from a
    report has no ``calls`` and batch 1 (the runner's latency is timed at batch 1).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    p50: PositiveMs
    p90: PositiveMs
    p99: PositiveMs
    mean: PositiveMs
    min: PositiveMs | None = None
    max: PositiveMs | None = None
    _calls: int | None = PrivateAttr(None)
    _batch: int = PrivateAttr(1)

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if not self.p50 <= self.p90 <= self.p99:
            raise ValueError("latency percentiles are not ordered (p50 <= p90 <= p99)")
        return self

    @property
    def calls(self) -> int | None:
        """How many timed calls the percentiles are over (None when read from a report)."""
        return self._calls

    @property
    def batch(self) -> int:
        return self._batch

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch * 1000.0 / self.p50

    def to_dict(self) -> dict[str, float]:
        """The export and benchmark form: ``p50_ms``, ..., ``calls``, ``batch``,
        ``throughput_ips``."""
        return {
            "p50_ms": self.p50,
            "p90_ms": self.p90,
            "p99_ms": self.p99,
            "mean_ms": self.mean,
            "calls": self.calls,
            "batch": self.batch,
            "throughput_ips": self.throughput,
        }

    @classmethod
    def from_samples(cls, samples_s: list[float], batch: int) -> Latency:
        """Percentiles, mean, min and max of per-call durations in seconds."""
        ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        latency = cls(
            p50=float(p50), p90=float(p90), p99=float(p99), mean=float(ms.mean()),
            min=float(ms.min()), max=float(ms.max()),
        )  # fmt: skip
        latency._calls, latency._batch = len(ms), batch
        return latency


def warm_up(call: Callable[[], object], seconds: float = 1.0, min_calls: int = 50) -> None:
    """Run ``call`` for at least ``seconds`` and at least ``min_calls`` times."""
    start = time.perf_counter()
    done = 0
    while done < min_calls or time.perf_counter() - start < seconds:
        call()
        done += 1


def time_calls(call: Callable[[], object], min_seconds: float, min_calls: int) -> list[float]:
    """Per-call durations in seconds (at least ``min_calls`` and ``min_seconds`` of them)."""
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def measure(
    call: Callable[[], object],
    batch: int = 1,
    warmup_s: float = 1.0,
    min_seconds: float = 3.0,
    min_calls: int = 200,
) -> Latency:
    """Warm up, then time ``call`` (one candidate on its own)."""
    warm_up(call, warmup_s)
    return Latency.from_samples(time_calls(call, min_seconds, min_calls), batch)


def interleaved(
    calls: dict[str, Callable[[], object]],
    batch: int = 1,
    warmup_s: float = 1.0,
    min_seconds: float = 3.0,
    min_calls: int = 200,
    rounds: int = 5,
) -> dict[str, Latency]:
    """Time several candidates in ``rounds`` interleaved rounds, pooling each one's samples.

    Every candidate is warmed up first; then each round gives every candidate an equal share
    of the time, so drift of the machine (other load, clocks) hits all candidates alike.
    """
    for call in calls.values():
        warm_up(call, warmup_s)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_round_s = min_seconds / rounds
    per_round_calls = max(1, -(-min_calls // rounds))
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name] += time_calls(call, per_round_s, per_round_calls)
    return {name: Latency.from_samples(values, batch) for name, values in samples.items()}


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), with the logical core count."""
    model = platform.processor() or platform.machine() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"
