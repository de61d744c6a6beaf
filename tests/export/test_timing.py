"""The latency protocol: percentiles, warm-up, interleaving."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from export.timing import Latency, interleaved, measure


def test_percentiles_from_samples() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    latency = Latency.from_samples(samples, batch=4)
    assert latency.p50 == pytest.approx(50.5)
    assert latency.p99 == pytest.approx(99.01)
    assert latency.mean == pytest.approx(50.5)
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
    assert result["slow"].p50 > 1.5 and result["fast"].p50 < result["slow"].p50


def test_one_latency_model_in_the_export_and_the_report_forms() -> None:
    """Export timings keep p50_ms..throughput_ips; a report's latency_ms keeps p50..max."""
    latency = Latency.from_samples([0.002, 0.001, 0.003], batch=2)
    export_form = latency.to_dict()
    assert list(export_form) == [
        "p50_ms", "p90_ms", "p99_ms", "mean_ms", "calls", "batch", "throughput_ips",
    ]  # fmt: skip
    assert export_form["calls"] == 3 and export_form["batch"] == 2
    assert list(latency.model_dump()) == ["p50", "p90", "p99", "mean", "min", "max"]
    assert (latency.min, latency.max) == pytest.approx((1.0, 3.0))
    read = Latency.model_validate_json(latency.model_dump_json())
    assert read.model_dump() == latency.model_dump() and read.calls is None
    for bad in ({"p50": 2.0, "p90": 1.0, "p99": 3.0, "mean": 2.0}, {"p50": float("nan")}):
        with pytest.raises(ValidationError):
            Latency.model_validate({"p90": 1.0, "p99": 3.0, "mean": 2.0, **bad})
