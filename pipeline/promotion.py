"""Which artifact a run registers, and whether it becomes ``candidate`` or ``champion``.

Pure functions over validation reports and registry tags, so every rule is tested without a
registry. Accuracies are fractions in [0, 1], as in the reports.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import RegistryConfig
from pipeline.errors import PipelineError
from targets.base import ArtifactResult, ValidationReport


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Evidence(Model):
    """What the validation says about one artifact across the targets."""

    artifact: str
    format: str
    precision: str
    sha256: str
    top1: float | None = Field(None, description="lowest test top-1 over the required targets")
    eval_set_sha256: str | None = None
    passed: bool = Field(description="passed the gates of every required target")
    verdicts: dict[str, str] = Field(default_factory=dict)  # target spec -> pass/fail/skipped
    reasons: list[str] = Field(default_factory=list)


class Champion(Model):
    """The current champion as its registry tags describe it."""

    version: str
    top1: float | None = None
    eval_set_sha256: str | None = None


class Decision(Model):
    candidate: bool
    champion: bool
    reasons: list[str] = Field(default_factory=list)


def _result(report: ValidationReport, artifact: str) -> ArtifactResult | None:
    return next((r for r in report.results if r.artifact == artifact), None)


def gather_evidence(
    artifact: str, reports: dict[str, ValidationReport], required: list[str]
) -> Evidence:
    """Combine one artifact's results on every target; fails if a report does not list it."""
    results: dict[str, ArtifactResult] = {}
    for spec, report in reports.items():
        result = _result(report, artifact)
        if result is None:
            raise PipelineError(f"the report of target {spec!r} has no artifact {artifact!r}")
        results[spec] = result
    first = next(iter(results.values()))
    hashes = {r.sha256 for r in results.values()}
    if len(hashes) != 1:
        raise PipelineError(
            f"targets validated different files for {artifact!r} (sha256 {sorted(hashes)}): "
            "validate every target against the same export"
        )
    evals = {reports[s].eval_set_sha256 for s in required if s in reports}
    reasons = []
    for spec in required:
        result = results.get(spec)
        if result is None:
            reasons.append(f"required target {spec} has no report")
        elif result.verdict != "pass":
            why = "; ".join(result.reasons) or "not measured"
            reasons.append(f"{spec}: {result.verdict or 'no verdict'} ({why})")
    if len(evals) > 1:
        reasons.append("the required targets used different eval sets")
    top1s = [results[s].top1 for s in required if s in results and results[s].top1 is not None]
    return Evidence(
        artifact=artifact,
        format=first.format,
        precision=first.precision,
        sha256=first.sha256,
        top1=min(top1s) if top1s else None,
        eval_set_sha256=next(iter(evals)) if len(evals) == 1 else None,
        passed=not reasons,
        verdicts={spec: r.verdict or "none" for spec, r in results.items()},
        reasons=reasons,
    )


def choose_artifact(
    reports: dict[str, ValidationReport], required: list[str], wanted: str = "auto"
) -> str:
    """The artifact to register: ``wanted``, or (auto) the fastest one that passes everywhere.

    Speed is the batch-1 p50 latency on the first required target; among equally fast ones the
    higher top-1 wins. When none passes, the first measured FP32 artifact is registered (it will
    get no alias), so the failed run is still on record.
    """
    names = [r.artifact for r in next(iter(reports.values())).results]
    if wanted != "auto":
        if wanted not in names:
            raise PipelineError(f"registry.artifact {wanted!r} was not exported; have {names}")
        return wanted
    lead = reports[required[0]] if required else next(iter(reports.values()))
    passing = []
    for name in names:
        evidence = gather_evidence(name, reports, required)
        result = _result(lead, name)
        if evidence.passed and result is not None and result.latency_ms is not None:
            passing.append((result.latency_ms.p50, -(result.top1 or 0.0), name))
    if passing:
        return min(passing)[2]
    measured = [r for r in lead.results if r.latency_ms is not None]
    if not measured:
        raise PipelineError(f"no artifact was measured on {lead.target}: nothing to register")
    fp32 = [r.artifact for r in measured if r.precision == "fp32"]
    return (fp32 or [measured[0].artifact])[0]


def decide(new: Evidence, champion: Champion | None, rules: RegistryConfig) -> Decision:
    """``candidate`` when every required gate passes; ``champion`` when it also beats the champion."""
    if not new.passed:
        return Decision(candidate=False, champion=False, reasons=["gates failed", *new.reasons])
    if champion is None:
        return Decision(candidate=True, champion=True, reasons=["passed every gate; no champion"])
    old = f"version {champion.version}"
    if champion.top1 is None or new.top1 is None:
        return Decision(
            candidate=True,
            champion=False,
            reasons=[f"top-1 of {old} or of this version unknown; promote by hand if wanted"],
        )
    if rules.same_eval_set and champion.eval_set_sha256 != new.eval_set_sha256:
        return Decision(
            candidate=True,
            champion=False,
            reasons=[
                f"champion {old} was measured on another eval set; top-1 is not comparable "
                "(onedge promote --version N to decide by hand)"
            ],
        )
    gain = new.top1 - champion.top1
    text = f"top-1 {new.top1:.2%} vs champion {old} {champion.top1:.2%}"
    if gain > rules.min_top1_gain:
        return Decision(candidate=True, champion=True, reasons=[f"{text}: better"])
    need = f"more than {rules.min_top1_gain:.2%} better" if rules.min_top1_gain else "better"
    return Decision(candidate=True, champion=False, reasons=[f"{text}: not {need}"])
