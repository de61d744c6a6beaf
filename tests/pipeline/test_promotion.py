"""The promotion rules, the artifact choice, the Pareto front and the retry condition."""

from __future__ import annotations

import numpy as np
import pytest

from export.timing import Latency
from pipeline.config import RegistryConfig
from pipeline.errors import ModelRegistryUnavailableError, PipelineError
from pipeline.model_registry.per_target import pareto_front
from pipeline.model_registry.promotion import (
    Champion,
    Evidence,
    choose_artifact,
    decide,
    gather_evidence,
)
from targets.base import ArtifactResult, TargetInfo, ValidationReport
from targets.runner import pack_bits

EVAL = "e" * 64
IMAGES = 1000


def flags(top1: float, extra_wrong: int = 0, extra_right: int = 0) -> np.ndarray:
    """Per-image correctness: the first round(top1 * IMAGES) images right, then edits.

    ``extra_wrong`` of the right images become wrong (from the start), ``extra_right`` of the
    wrong ones become right (from the end), so two calls differ on exactly those images.
    """
    right = np.arange(IMAGES) < round(top1 * IMAGES)
    right[:extra_wrong] = False
    if extra_right:
        right[-extra_right:] = True
    return right


def champion(correct: np.ndarray, version: str = "3", eval_sha: str = EVAL) -> Champion:
    return Champion(
        version=version, top1=float(correct.mean()), eval_set_sha256=eval_sha,
        eval_size=IMAGES, correct=pack_bits(correct),
    )  # fmt: skip


def result(artifact: str, top1: float, p50: float, verdict: str = "pass", sha: str = "a") -> dict:
    fmt, precision = artifact.split("-")
    return dict(
        artifact=artifact, format=fmt, precision=precision, target="t", sha256=sha * 64,
        top1=top1, latency_ms=Latency(p50=p50, p90=p50, p99=p50, mean=p50),
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


def evidence(
    top1: float = 0.95, passed: bool = True, eval_sha: str = EVAL, correct: np.ndarray | None = None
) -> Evidence:
    if correct is not None:
        top1 = float(correct.mean())
    return Evidence(
        artifact="onnx-int8", format="onnx", precision="int8", sha256="a" * 64, top1=top1,
        eval_set_sha256=eval_sha, passed=passed, reasons=[] if passed else ["t: fail (slow)"],
        eval_size=None if correct is None else IMAGES,
        correct=None if correct is None else pack_bits(correct),
    )  # fmt: skip


RULES = RegistryConfig()


def test_no_champion_makes_a_passing_version_champion():
    d = decide(evidence(), None, RULES)
    assert d.candidate and d.champion


def test_a_significantly_better_candidate_takes_the_champion_alias():
    old = flags(0.90)
    new = flags(0.90, extra_wrong=5, extra_right=45)  # +40 images net, 50 discordant
    d = decide(evidence(correct=new), champion(old), RULES)
    assert d.candidate and d.champion
    assert "significantly better" in d.reasons[0]
    c = d.comparison
    assert (c.new_only, c.champion_only) == (45, 5)
    assert c.p_value < 1e-8
    assert c.difference["estimate"] == pytest.approx(0.04)
    assert 0 < c.difference["low"] < 0.04 < c.difference["high"]
    assert c.new_top1["low"] < 0.94 < c.new_top1["high"]
    assert "McNemar p" in d.reasons[0]


def test_a_better_but_not_significant_candidate_stays_candidate():
    old = flags(0.90)
    new = flags(0.90, extra_wrong=3, extra_right=7)  # +4 images: p = 0.34
    d = decide(evidence(correct=new), champion(old), RULES)
    assert d.candidate and not d.champion
    assert "not significantly better" in d.reasons[0] and "stays candidate" in d.reasons[0]
    assert d.comparison.p_value == pytest.approx(0.34375)
    assert d.comparison.difference["low"] < 0 < d.comparison.difference["high"]
    loose = RegistryConfig(max_p_value=0.5)
    assert decide(evidence(correct=new), champion(old), loose).champion


@pytest.mark.parametrize("extra_right", [5, 0])
def test_an_equal_or_worse_candidate_stays_candidate(extra_right):
    old = flags(0.95)
    new = flags(0.95, extra_wrong=5, extra_right=extra_right)
    d = decide(evidence(correct=new), champion(old), RULES)
    assert d.candidate and not d.champion
    assert "not better" in d.reasons[0]


def test_without_per_image_results_the_champion_stays():
    legacy = Champion(version="3", top1=0.90, eval_set_sha256=EVAL)
    d = decide(evidence(top1=0.99), legacy, RULES)
    assert d.candidate and not d.champion
    assert "no per-image results" in d.reasons[0]


def test_a_failed_gate_gets_no_alias_even_without_champion():
    d = decide(evidence(passed=False), None, RULES)
    assert not d.candidate and not d.champion
    assert "t: fail (slow)" in d.reasons


def test_min_gain_is_required_strictly():
    rules = RegistryConfig(min_top1_gain=0.05)
    old = flags(0.90)
    assert not decide(evidence(correct=flags(0.90, extra_right=40)), champion(old), rules).champion
    assert decide(evidence(correct=flags(0.90, extra_right=60)), champion(old), rules).champion


def test_champion_on_another_eval_set_is_not_compared():
    champ = champion(flags(0.5), eval_sha="f" * 64)
    d = decide(evidence(correct=flags(0.99)), champ, RULES)
    assert d.candidate and not d.champion
    assert "another eval set" in d.reasons[0]
    assert decide(
        evidence(correct=flags(0.99)), champ, RegistryConfig(same_eval_set=False)
    ).champion


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


def timed(artifact: str, center: float, size_mb: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sample = sorted(rng.normal(center, 0.01, 400).tolist())
    r = result(artifact, 0.95, float(np.median(sample)))
    r.update(latency_sample_ms=sample, size_mb=size_mb)
    return r


@pytest.mark.parametrize("seed", range(6))
def test_latency_ties_within_noise_go_to_the_smaller_lower_precision_artifact(seed):
    # two artifacts of the same speed: whichever measures faster by noise, the same one wins
    reports = {
        "local-cpu": report(
            timed("onnx-fp32", 0.070, 0.30, seed), timed("onnx-int8", 0.070, 0.10, seed + 100)
        )
    }
    assert choose_artifact(reports, ["local-cpu"]) == "onnx-int8"


def test_a_significantly_faster_artifact_wins_the_tie_order():
    reports = {
        "local-cpu": report(timed("onnx-int8", 0.090, 0.10, 1), timed("onnx-fp32", 0.060, 0.30, 2))
    }
    assert choose_artifact(reports, ["local-cpu"]) == "onnx-fp32"


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

    from pipeline.flows.limits import transient_fault
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
