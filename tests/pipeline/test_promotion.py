"""The promotion rules, the artifact choice, the Pareto front and the retry condition."""

from __future__ import annotations

import pytest

from pipeline.config import RegistryConfig
from pipeline.errors import ModelRegistryUnavailableError, PipelineError
from pipeline.promotion import Champion, Evidence, choose_artifact, decide, gather_evidence
from pipeline.report import pareto_front
from targets.base import ArtifactResult, LatencyStats, TargetInfo, ValidationReport

EVAL = "e" * 64


def result(artifact: str, top1: float, p50: float, verdict: str = "pass", sha: str = "a") -> dict:
    fmt, precision = artifact.split("-")
    return dict(
        artifact=artifact, format=fmt, precision=precision, target="t", sha256=sha * 64,
        top1=top1, latency_ms=LatencyStats(p50=p50, p90=p50, p99=p50, mean=p50),
        verdict=verdict, reasons=[] if verdict == "pass" else ["p99 too high"],
    )  # fmt: skip


def report(*results: dict, eval_sha: str = EVAL) -> ValidationReport:
    return ValidationReport(
        target="t",
        target_info=TargetInfo(name="t", kind="local-cpu"),
        settings={},
        eval_set_sha256=eval_sha,
        results=[ArtifactResult(**r) for r in results],
    )


def evidence(top1: float = 0.95, passed: bool = True, eval_sha: str = EVAL) -> Evidence:
    return Evidence(
        artifact="onnx-int8", format="onnx", precision="int8", sha256="a" * 64, top1=top1,
        eval_set_sha256=eval_sha, passed=passed, reasons=[] if passed else ["t: fail (slow)"],
    )  # fmt: skip


RULES = RegistryConfig()


def test_no_champion_makes_a_passing_version_champion():
    d = decide(evidence(), None, RULES)
    assert d.candidate and d.champion


def test_a_better_candidate_takes_the_champion_alias():
    d = decide(evidence(top1=0.96), Champion(version="3", top1=0.95, eval_set_sha256=EVAL), RULES)
    assert d.candidate and d.champion
    assert "better" in d.reasons[0]


@pytest.mark.parametrize("top1", [0.95, 0.94])
def test_an_equal_or_worse_candidate_stays_candidate(top1):
    d = decide(evidence(top1=top1), Champion(version="3", top1=0.95, eval_set_sha256=EVAL), RULES)
    assert d.candidate and not d.champion
    assert "not better" in d.reasons[0]


def test_a_failed_gate_gets_no_alias_even_without_champion():
    d = decide(evidence(passed=False), None, RULES)
    assert not d.candidate and not d.champion
    assert "t: fail (slow)" in d.reasons


def test_min_gain_is_required_strictly():
    rules = RegistryConfig(min_top1_gain=0.01)
    champ = Champion(version="1", top1=0.95, eval_set_sha256=EVAL)
    assert not decide(evidence(top1=0.955), champ, rules).champion
    assert decide(evidence(top1=0.965), champ, rules).champion


def test_champion_on_another_eval_set_is_not_compared():
    champ = Champion(version="1", top1=0.5, eval_set_sha256="f" * 64)
    d = decide(evidence(top1=0.99), champ, RULES)
    assert d.candidate and not d.champion
    assert "another eval set" in d.reasons[0]
    assert decide(evidence(top1=0.99), champ, RegistryConfig(same_eval_set=False)).champion


def test_evidence_needs_every_required_target():
    reports = {
        "local-cpu": report(result("onnx-fp32", 0.95, 1.0)),
        "ssh://b:22/jetson": report(result("onnx-fp32", 0.94, 3.0, verdict="fail")),
    }
    both = gather_evidence("onnx-fp32", reports, ["local-cpu", "ssh://b:22/jetson"])
    assert not both.passed and both.top1 == 0.94
    assert "ssh://b:22/jetson: fail (p99 too high)" in both.reasons
    local_only = gather_evidence("onnx-fp32", reports, ["local-cpu"])
    assert local_only.passed and local_only.top1 == 0.95
    assert local_only.verdicts == {"local-cpu": "pass", "ssh://b:22/jetson": "fail"}


def test_evidence_refuses_different_files_on_two_targets():
    reports = {
        "a": report(result("onnx-fp32", 0.95, 1.0, sha="a")),
        "b": report(result("onnx-fp32", 0.95, 1.0, sha="b")),
    }
    with pytest.raises(PipelineError, match="different files"):
        gather_evidence("onnx-fp32", reports, ["a", "b"])


def test_auto_choice_is_the_fastest_passing_artifact():
    reports = {
        "local-cpu": report(
            result("onnx-fp32", 0.95, 1.0),
            result("onnx-int8", 0.94, 0.4),
            result("openvino-int8", 0.95, 0.3, verdict="fail"),
        )
    }
    assert choose_artifact(reports, ["local-cpu"]) == "onnx-int8"
    assert choose_artifact(reports, ["local-cpu"], "onnx-fp32") == "onnx-fp32"
    with pytest.raises(PipelineError, match="was not exported"):
        choose_artifact(reports, ["local-cpu"], "tensorrt-fp16")


def test_when_nothing_passes_the_fp32_artifact_is_registered():
    reports = {
        "local-cpu": report(
            result("onnx-int8", 0.5, 0.4, verdict="fail"),
            result("onnx-fp32", 0.9, 1.0, verdict="fail"),
        )
    }
    assert choose_artifact(reports, ["local-cpu"]) == "onnx-fp32"


def test_pareto_front():
    # (latency, accuracy): b is dominated by a (slower, less accurate); d ties a exactly
    points = [(1.0, 0.9), (2.0, 0.85), (0.5, 0.8), (1.0, 0.9), (3.0, 0.95)]
    assert pareto_front(points) == [True, False, True, True, True]


def test_only_transient_faults_are_retried():
    from prefect.states import Completed, Failed

    from pipeline.flows import transient_fault
    from targets.errors import RunnerFailedError, TargetTimeoutError, TargetUnreachableError

    for exc in (
        TargetUnreachableError("x"),
        TargetTimeoutError("x"),
        ModelRegistryUnavailableError("x"),
    ):
        assert transient_fault(None, None, Failed(data=exc)) is True
    for exc in (RunnerFailedError("x"), ValueError("x"), PipelineError("x")):
        assert transient_fault(None, None, Failed(data=exc)) is False
    assert transient_fault(None, None, Completed(data=1)) is False
