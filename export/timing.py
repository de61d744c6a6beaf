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
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Per-call latency in milliseconds over ``calls`` timed calls of batch ``batch``."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    calls: int
    batch: int

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch * 1000.0 / self.p50_ms if self.p50_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["throughput_ips"] = self.throughput
        return out

    @classmethod
    def from_samples(cls, samples_s: list[float], batch: int) -> Latency:
        ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), len(ms), batch)


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
