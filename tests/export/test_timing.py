"""The latency protocol: percentiles, warm-up, interleaving."""

from __future__ import annotations

import time

import pytest

from export.timing import Latency, interleaved, measure


def test_percentiles_from_samples() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    latency = Latency.from_samples(samples, batch=4)
    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p99_ms == pytest.approx(99.01)
    assert latency.mean_ms == pytest.approx(50.5)
    assert latency.throughput == pytest.approx(4 * 1000 / 50.5)


def test_measure_counts_calls_and_excludes_warm_up() -> None:
    calls = []
    latency = measure(lambda: calls.append(1), warmup_s=0.01, min_seconds=0.01, min_calls=30)
    assert latency.calls >= 30 and len(calls) >= latency.calls + 50


def test_interleaved_ranks_candidates() -> None:
    result = interleaved(
        {"fast": lambda: None, "slow": lambda: time.sleep(0.002)},
        warmup_s=0.0,
        min_seconds=0.1,
        min_calls=20,
        rounds=4,
    )
    assert set(result) == {"fast", "slow"}
    assert all(r.calls >= 20 for r in result.values())
    assert result["slow"].p50_ms > 1.5 and result["fast"].p50_ms < result["slow"].p50_ms
