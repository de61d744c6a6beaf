"""Per-target choice: on each target, the most accurate artifact that fits that target's budget.

A family of students (the student ensemble) is exported and validated on every target; each
target may carry a :class:`TargetBudget` (``validate.budgets[<target>]``, :class:`targets.gates.TargetBudget`). :func:`choose_per_target`
is pure: given the validation reports (one per target, each result already judged by the gates)
and the budgets, it picks per target the artifact with the highest top-1 among those that passed
the gates and meet the budget, and marks the Pareto front of (top-1 up, p50 latency down) among
the measured artifacts. Artifacts that tie on top-1 are ranked by the single-champion rule
(:func:`pipeline.model_registry.promotion.speed_order`): faster only when the bootstrap 95% CI of the p50
difference (per-call latency samples) excludes 0; otherwise the smaller file, then the lower
precision, then the name. So the same config picks the same artifact per target run after run. Aliases per target are
``candidate-<target>`` and ``champion-<target>`` (:func:`target_alias`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pydantic import Field

from onedge.strict import StrictModel
from pipeline.model_registry.promotion import speed_order
from targets.base import ArtifactResult, ValidationReport
from targets.gates import TargetBudget


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, accuracy) points: True where no other point is as fast and as accurate
    with one of the two strictly better."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (o_lat <= lat and o_acc >= acc) and (o_lat < lat or o_acc > acc)
            for j, (o_lat, o_acc) in enumerate(points)
            if j != i
        )
        front.append(not dominated)
    return front


class TargetChoice(StrictModel):
    """The pick on one target, the front, and why every other artifact was left out."""

    target: str
    budget: TargetBudget
    pick: str | None = None  # artifact name, None when nothing fits
    pick_top1: float | None = None
    pick_p99_ms: float | None = None
    front: list[str] = Field(default_factory=list)  # Pareto front, by p50 latency
    excluded: dict[str, list[str]] = Field(default_factory=dict)  # artifact -> reasons


def budget_reasons(result: ArtifactResult, budget: TargetBudget) -> list[str]:
    """Why ``result`` does not fit ``budget`` (empty: it fits)."""
    reasons = []
    if result.top1 is None or result.latency_ms is None:
        return ["not measured"]
    if budget.max_p99_ms is not None and result.latency_ms.p99 > budget.max_p99_ms:
        reasons.append(
            f"p99 {result.latency_ms.p99:.3f} ms over the budget {budget.max_p99_ms:.3f} ms"
        )
    if budget.max_size_mb is not None and (result.size_mb or 0.0) > budget.max_size_mb:
        reasons.append(f"size {result.size_mb:.3f} MB over the budget {budget.max_size_mb:.3f} MB")
    if budget.min_top1 is not None and result.top1 < budget.min_top1:
        reasons.append(f"top-1 {result.top1:.2%} under the budget's {budget.min_top1:.2%}")
    return reasons


def front_of(results: Iterable[ArtifactResult]) -> list[str]:
    """Names on the Pareto front of (p50 latency down, top-1 up), fastest first."""

    measured = [r for r in results if r.top1 is not None and r.latency_ms is not None]
    marks = pareto_front([(r.latency_ms.p50, r.top1) for r in measured])
    front = [r for r, on in zip(measured, marks, strict=True) if on]
    return [r.artifact for r in sorted(front, key=lambda r: (r.latency_ms.p50, r.artifact))]


def choose_for_target(report: ValidationReport, budget: TargetBudget) -> TargetChoice:
    """The pick on one target: see the module docstring."""
    excluded: dict[str, list[str]] = {}
    fitting = []
    for result in report.results:
        why = f" ({'; '.join(result.reasons)})" if result.reasons else ""
        reasons = [] if result.verdict == "pass" else [f"gates: {result.verdict}{why}"]
        reasons += budget_reasons(result, budget)
        if reasons:
            excluded[result.artifact] = reasons
        else:
            fitting.append(result)
    choice = TargetChoice(
        target=report.target,
        budget=budget,
        front=front_of(report.results),
        excluded=excluded,
    )
    if fitting:
        top = max(r.top1 for r in fitting)
        best = speed_order([r for r in fitting if r.top1 == top])[0]
        choice.pick, choice.pick_top1 = best.artifact, best.top1
        choice.pick_p99_ms = best.latency_ms.p99
    return choice


def choose_per_target(
    reports: Iterable[ValidationReport], budgets: Mapping[str, TargetBudget]
) -> dict[str, TargetChoice]:
    """One :class:`TargetChoice` per report's target (targets without a budget: no limit)."""
    return {
        report.target: choose_for_target(report, budgets.get(report.target, TargetBudget()))
        for report in reports
    }


def target_alias(kind: str, target: str) -> str:
    """``candidate-<target>`` / ``champion-<target>``, the target name made alias-safe."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", target).strip("-")
    return f"{kind}-{safe}"
