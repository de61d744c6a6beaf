"""Gates: crafted policies that an artifact passes and fails."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from export.timing import Latency
from targets import ArtifactResult, GatePolicy, evaluate


def measured(**overrides: object) -> ArtifactResult:
    fields = dict(
        artifact="onnx-int8",
        format="onnx",
        precision="int8",
        target="local-cpu",
        sha256="a" * 64,
        top1=0.970,
        reference_top1=0.975,
        top1_drop=0.005,
        agreement=0.99,
        latency_ms=Latency(p50=1.0, p90=1.5, p99=2.0, mean=1.1),
        throughput=800.0,
        throughput_batch=32,
        size_mb=4.0,
    )
    fields.update(overrides)
    return ArtifactResult(**fields)


def test_a_generous_policy_passes_and_lists_its_checks() -> None:
    policy = GatePolicy(
        max_top1_drop=0.01,
        min_agreement=0.98,
        default_max_p99_ms=5.0,
        min_throughput=500.0,
        max_size_mb=10.0,
    )
    verdict = evaluate(measured(), policy, "local-cpu")
    assert verdict.passed and verdict.reasons == []
    assert len(verdict.checks) == 5 and all(c.startswith("ok:") for c in verdict.checks)


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (GatePolicy(max_top1_drop=0.003), "top-1 drop 0.50 points (limit 0.30)"),
        (GatePolicy(max_top1_drop=None, min_agreement=0.995), "agreement 99.00% (minimum 99.50%)"),
        (GatePolicy(max_top1_drop=None, default_max_p99_ms=1.5), "p99 latency 2.000 ms"),
        (GatePolicy(max_top1_drop=None, min_throughput=1000.0), "throughput 800.0 img/s"),
        (GatePolicy(max_top1_drop=None, max_size_mb=3.5), "size 4.00 MB"),
    ],
)
def test_each_limit_fails_with_its_reason(policy: GatePolicy, fragment: str) -> None:
    verdict = evaluate(measured(), policy, "local-cpu")
    assert not verdict.passed
    assert len(verdict.reasons) == 1 and fragment in verdict.reasons[0]


def test_all_failures_are_reported_together() -> None:
    policy = GatePolicy(max_top1_drop=0.001, max_size_mb=1.0, min_throughput=10_000.0)
    verdict = evaluate(measured(), policy, "local-cpu")
    assert len(verdict.reasons) == 3


def test_p99_budget_is_per_target_with_a_default() -> None:
    policy = GatePolicy(max_p99_ms={"orin-nano": 1.0, "local-cpu": 3.0}, default_max_p99_ms=2.5)
    assert evaluate(measured(), policy, "local-cpu").passed
    orin = evaluate(measured(), policy, "orin-nano")
    assert not orin.passed and "on orin-nano (limit 1.000 ms)" in orin.reasons[0]
    other = evaluate(measured(latency_ms=Latency(p50=2, p90=2, p99=2.6, mean=2)), policy, "x")
    assert not other.passed and "limit 2.500 ms" in other.reasons[0]


def test_a_drop_limit_without_reference_logits_fails() -> None:
    verdict = evaluate(measured(top1_drop=None, reference_top1=None), GatePolicy(), "local-cpu")
    assert not verdict.passed and "no reference_logits" in verdict.reasons[0]


def test_an_unmeasured_artifact_never_passes() -> None:
    verdict = evaluate(measured(top1=None, latency_ms=None), GatePolicy(), "local-cpu")
    assert not verdict.passed


def test_policy_rejects_unknown_keys_and_negative_limits() -> None:
    with pytest.raises(ValidationError):
        GatePolicy(max_p99=3.0)
    with pytest.raises(ValidationError):
        GatePolicy(max_top1_drop=-0.01)
    with pytest.raises(ValidationError):
        GatePolicy(min_agreement=99.0)  # a fraction, not percent
