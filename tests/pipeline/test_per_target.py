"""Per-target choice of the best student artifact that fits each target's budget."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from export.timing import Latency
from pipeline.model_registry.per_target import budget_reasons, choose_per_target, target_alias
from targets.base import ArtifactResult, TargetInfo, ValidationReport
from targets.gates import TargetBudget


def result(name: str, top1: float, p99: float, *, verdict: str = "pass", size: float = 1.0):
    return ArtifactResult(
        artifact=name, format="onnx", precision="int8", target="t", sha256="a" * 64,
        top1=top1, latency_ms=Latency(p50=p99 / 2, p90=p99, p99=p99, mean=p99 / 2),
        size_mb=size, verdict=verdict,
    )  # fmt: skip


def report(target: str, *results: ArtifactResult) -> ValidationReport:
    return ValidationReport(
        target=target,
        target_info=TargetInfo(name=target, kind="local-cpu"),
        settings={},
        results=list(results),
    )


# a family: wider students are more accurate and slower
FAMILY = [
    result("s0-w1.0-onnx-int8", 0.96, 4.0, size=2.0),
    result("s1-w0.6-onnx-int8", 0.94, 2.0, size=0.8),
    result("s2-w0.2-onnx-int8", 0.90, 0.5, size=0.1),
]


def test_each_target_gets_the_most_accurate_artifact_within_its_budget():
    budgets = {
        "tight": TargetBudget(max_p99_ms=1.0),
        "medium": TargetBudget(max_p99_ms=2.5),
        "loose": TargetBudget(),
    }
    reports = [report(name, *FAMILY) for name in ("tight", "medium", "loose")]
    choices = choose_per_target(reports, budgets)
    assert {t: c.pick for t, c in choices.items()} == {
        "tight": "s2-w0.2-onnx-int8",
        "medium": "s1-w0.6-onnx-int8",
        "loose": "s0-w1.0-onnx-int8",
    }
    tight = choices["tight"]
    assert tight.pick_top1 == 0.90 and tight.pick_p99_ms == 0.5
    assert set(tight.excluded) == {"s0-w1.0-onnx-int8", "s1-w0.6-onnx-int8"}
    assert "over the budget 1.000 ms" in tight.excluded["s0-w1.0-onnx-int8"][0]
    # every family member is on the front: each is faster or more accurate than the others
    assert tight.front == ["s2-w0.2-onnx-int8", "s1-w0.6-onnx-int8", "s0-w1.0-onnx-int8"]


def test_gates_size_and_min_top1_exclude_and_ties_go_to_the_faster():
    results = [
        result("a", 0.95, 3.0, verdict="fail"),
        result("b", 0.93, 2.0, size=5.0),
        result("c", 0.93, 1.5),
        result("d", 0.93, 1.0),
        result("e", 0.80, 0.2),
    ]
    budget = TargetBudget(max_size_mb=4.0, min_top1=0.85)
    choice = choose_per_target([report("t", *results)], {"t": budget})["t"]
    assert choice.pick == "d"  # c and d tie on top-1: the faster wins
    assert choice.excluded["a"] == ["gates: fail"]
    assert "size 5.000 MB" in choice.excluded["b"][0]
    assert "under the budget's 85.00%" in choice.excluded["e"][0]
    assert choice.front == ["e", "d", "a"]  # b and c are slower than d at the same top-1


def sampled(name: str, precision: str, top1: float, center: float, size: float, seed: int):
    """A result with 400 per-call latency samples around ``center`` ms (sd 0.01 ms)."""
    sample = sorted(np.random.default_rng(seed).normal(center, 0.01, 400).tolist())
    p50 = float(np.median(sample))
    r = result(name, top1, 2 * p50, size=size)
    return r.model_copy(
        update={
            "precision": precision,
            "latency_ms": Latency(p50=p50, p90=sample[360], p99=sample[396], mean=p50),
            "latency_sample_ms": sample,
        }
    )


def test_top1_ties_within_timing_noise_pick_the_same_artifact_whatever_the_order():
    # two artifacts of one student with the same top-1 and the same speed: the p50s differ by
    # noise only, so the pick must not follow them (smaller file first, as for the champion)
    picks, fp32_measured_faster = set(), 0
    for seed in range(8):
        fp32 = sampled("s1-w0.6-onnx-fp32", "fp32", 0.94, 0.070, 0.30, seed)
        int8 = sampled("s1-w0.6-onnx-int8", "int8", 0.94, 0.070, 0.10, seed + 100)
        wide = sampled("s0-w1.0-onnx-int8", "int8", 0.96, 0.300, 0.50, seed + 200)
        fp32_measured_faster += fp32.latency_ms.p50 < int8.latency_ms.p50
        budget = {"t": TargetBudget(max_p99_ms=0.2)}  # the wider, more accurate one is too slow
        for order in ([fp32, int8, wide], [wide, int8, fp32]):
            picks.add(choose_per_target([report("t", *order)], budget)["t"].pick)
    assert 0 < fp32_measured_faster < 8  # the noise does flip the p50 order across runs
    assert picks == {"s1-w0.6-onnx-int8"}


def test_top1_ties_with_a_clear_speed_difference_go_to_the_faster():
    for seed in range(3):
        slow = sampled("s1-w0.6-onnx-int8", "int8", 0.94, 0.090, 0.10, seed)
        fast = sampled("s1-w0.6-onnx-fp32", "fp32", 0.94, 0.060, 0.30, seed + 100)
        for order in ([slow, fast], [fast, slow]):
            choice = choose_per_target([report("t", *order)], {})["t"]
            assert choice.pick == "s1-w0.6-onnx-fp32"  # faster beyond noise beats the tie order


def test_nothing_fits_gives_no_pick():
    choice = choose_per_target([report("t", *FAMILY)], {"t": TargetBudget(max_p99_ms=0.1)})["t"]
    assert choice.pick is None and len(choice.excluded) == 3


def test_unmeasured_results_never_fit():
    unmeasured = ArtifactResult(
        artifact="x", format="onnx", precision="fp32", target="t", sha256="a" * 64
    )
    assert budget_reasons(unmeasured, TargetBudget()) == ["not measured"]


def test_budgets_are_typed_and_aliases_safe():
    with pytest.raises(ValidationError):
        TargetBudget(max_p99_ms=-1)
    with pytest.raises(ValidationError):
        TargetBudget(max_latency=3)
    assert target_alias("champion", "local-cpu") == "champion-local-cpu"
    assert target_alias("candidate", "ssh://nvidia@10.0.0.2:22/jetson") == (
        "candidate-ssh-nvidia-10-0-0-2-22-jetson"
    )


def test_budgets_must_name_configured_targets():
    from pipeline.config import ValidateConfig

    cfg = ValidateConfig(targets=["local-cpu"], budgets={"local-cpu": {"max_p99_ms": 2.0}})
    assert cfg.budgets["local-cpu"].max_p99_ms == 2.0
    with pytest.raises(ValidationError, match="budgets has a budget for 'board'"):
        ValidateConfig(targets=["local-cpu"], budgets={"board": {"max_p99_ms": 2.0}})


def test_one_machine_listed_twice_under_two_labels():
    from onedge.errors import ConfigError, RegistryError
    from pipeline.run_folder import board_limit_name
    from targets.base import board_of, parse_target

    tight = parse_target("local-cpu#tight")
    assert tight.name == "local-cpu#tight" and tight.kind == "local-cpu"
    assert board_of("local-cpu#loose") == "local-cpu"
    # both labels queue on the one CPU: two measurements never overlap
    assert board_limit_name("local-cpu#tight") == board_limit_name("local-cpu")
    with pytest.raises(ConfigError, match="give a label"):
        parse_target("local-cpu#")
    with pytest.raises(RegistryError, match="unknown target 'remote-cpu'"):
        parse_target("remote-cpu#x")
