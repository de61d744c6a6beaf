"""Which artifact a run registers, and whether it becomes ``candidate`` or ``champion``.

Pure functions over validation reports and registry tags, so every rule is tested without a
registry. Accuracies are fractions in [0, 1], as in the reports.
"""

from __future__ import annotations

from pydantic import Field

from onedge.strict import StrictModel
from pipeline.config import RegistryConfig
from pipeline.errors import PipelineError
from targets.base import ArtifactResult, ValidationReport, unpack_bits
from training.stats import difference_interval, mcnemar, median_difference_interval, top1_interval

PRECISION_ORDER = {"int8": 0, "fp16": 1, "fp32": 2}  # ties on speed: the lower precision wins


class Evidence(StrictModel):
    """What the validation says about one artifact across the targets."""

    artifact: str
    format: str
    precision: str
    sha256: str
    top1: float | None = Field(None, description="lowest test top-1 over the required targets")
    eval_set_sha256: str | None = None
    eval_size: int | None = None
    correct: str | None = Field(None, description="per-image correctness (packed), first target")
    passed: bool = Field(description="passed the gates of every required target")
    verdicts: dict[str, str] = Field(default_factory=dict)  # target spec -> pass/fail/skipped
    reasons: list[str] = Field(default_factory=list)


class Champion(StrictModel):
    """The current champion as its registry tags describe it."""

    version: str
    top1: float | None = None
    eval_set_sha256: str | None = None
    eval_size: int | None = None
    correct: str | None = None


class Comparison(StrictModel):
    """Challenger against champion on the same images (fractions; difference = new - old)."""

    new_top1: dict[str, float]  # Interval.to_dict(): estimate, low, high, level
    champion_top1: dict[str, float]
    difference: dict[str, float]
    new_only: int  # images only the challenger gets right
    champion_only: int
    p_value: float  # exact McNemar, two-sided

    def summary(self) -> str:
        d = self.difference
        return (
            f"difference {100 * d['estimate']:+.2f} points [95% CI {100 * d['low']:+.2f}, "
            f"{100 * d['high']:+.2f}], McNemar p = {self.p_value:.3g} "
            f"({self.new_only} images only the challenger gets right, "
            f"{self.champion_only} only the champion)"
        )


class Decision(StrictModel):
    candidate: bool
    champion: bool
    reasons: list[str] = Field(default_factory=list)
    comparison: Comparison | None = None


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
    lead = next((results[s] for s in required if s in results), first)
    return Evidence(
        artifact=artifact,
        format=first.format,
        precision=first.precision,
        sha256=first.sha256,
        top1=min(top1s) if top1s else None,
        eval_set_sha256=next(iter(evals)) if len(evals) == 1 else None,
        eval_size=lead.eval_size,
        correct=lead.correct,
        passed=not reasons,
        verdicts={spec: r.verdict or "none" for spec, r in results.items()},
        reasons=reasons,
    )


def speed_order(results: list[ArtifactResult]) -> list[ArtifactResult]:
    """Passing results, fastest first, where "faster" must be more than timing noise.

    The artifact with the lowest p50 leads; every artifact whose p50 is not significantly slower
    than the leader's (the bootstrap 95% CI of the p50 difference includes 0) ties with it, and
    ties go to the stated order: smaller file, then lower precision, then name. So the same
    config registers the same artifact run after run. Reports without timing samples compare p50
    alone (ties only on equal figures).
    """
    timed = [r for r in results if r.latency_ms is not None]
    if not timed:
        return []
    lead = min(timed, key=lambda r: (r.latency_ms.p50, r.artifact))

    def tied(r: ArtifactResult) -> bool:
        if r is lead:
            return True
        if r.latency_sample_ms and lead.latency_sample_ms:
            ci = median_difference_interval(lead.latency_sample_ms, r.latency_sample_ms)
            return ci.low <= 0.0
        return r.latency_ms.p50 == lead.latency_ms.p50

    def stated(r: ArtifactResult) -> tuple:
        return (r.size_mb or 0.0, PRECISION_ORDER.get(r.precision, 9), r.artifact)

    ties = sorted((r for r in timed if tied(r)), key=stated)
    rest = sorted((r for r in timed if not tied(r)), key=lambda r: (r.latency_ms.p50, stated(r)))
    return ties + rest


def choose_artifact(
    reports: dict[str, ValidationReport], required: list[str], wanted: str = "auto"
) -> str:
    """The artifact to register: ``wanted``, or (auto) the fastest one that passes everywhere.

    Speed is the batch-1 latency on the first required target, compared as in
    :func:`speed_order`. When none passes, the first measured FP32 artifact is registered (it
    will get no alias), so the failed run is still on record.
    """
    names = [r.artifact for r in next(iter(reports.values())).results]
    if wanted != "auto":
        if wanted not in names:
            raise PipelineError(f"registry.artifact {wanted!r} was not exported; have {names}")
        return wanted
    lead = reports[required[0]] if required else next(iter(reports.values()))
    passing = []
    for name in names:
        result = _result(lead, name)
        if result is not None and gather_evidence(name, reports, required).passed:
            passing.append(result)
    ordered = speed_order(passing)
    if ordered:
        return ordered[0].artifact
    measured = [r for r in lead.results if r.latency_ms is not None]
    if not measured:
        raise PipelineError(f"no artifact was measured on {lead.target}: nothing to register")
    fp32 = [r.artifact for r in measured if r.precision == "fp32"]
    return (fp32 or [measured[0].artifact])[0]


def compare(new: Evidence, champion: Champion) -> Comparison | None:
    """Paired comparison on the same images, or None when either side lacks per-image results."""
    if not (new.correct and champion.correct and new.eval_size and champion.eval_size):
        return None
    if new.eval_size != champion.eval_size:
        return None
    try:
        a = unpack_bits(champion.correct, champion.eval_size)
        b = unpack_bits(new.correct, new.eval_size)
    except ValueError as exc:
        raise PipelineError(f"per-image results of the champion or challenger: {exc}") from None
    test = mcnemar(a, b)
    return Comparison(
        new_top1=top1_interval(b, resamples=2000).to_dict(),
        champion_top1=top1_interval(a, resamples=2000).to_dict(),
        difference=difference_interval(a, b, resamples=2000).to_dict(),
        new_only=test.b_only,
        champion_only=test.a_only,
        p_value=test.p_value,
    )


def decide(new: Evidence, champion: Champion | None, rules: RegistryConfig) -> Decision:
    """``candidate`` when every required gate passes; ``champion`` when it is also significantly
    better than the champion on the same images (exact McNemar p below ``rules.max_p_value``, and
    a top-1 gain above ``rules.min_top1_gain``)."""
    if not new.passed:
        return Decision(candidate=False, champion=False, reasons=["gates failed", *new.reasons])
    if champion is None:
        return Decision(candidate=True, champion=True, reasons=["passed every gate; no champion"])
    old = f"version {champion.version}"
    by_hand = "onedge promote --version N to decide by hand"
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
                f"({by_hand})"
            ],
        )
    text = f"top-1 {new.top1:.2%} vs champion {old} {champion.top1:.2%}"
    comparison = compare(new, champion)
    if comparison is None:
        return Decision(
            candidate=True,
            champion=False,
            reasons=[f"{text}: no per-image results to test the difference on ({by_hand})"],
        )
    gain = new.top1 - champion.top1
    stats = comparison.summary()
    if gain <= rules.min_top1_gain or comparison.new_only <= comparison.champion_only:
        need = f"more than {rules.min_top1_gain:.2%} better" if rules.min_top1_gain else "better"
        return Decision(
            candidate=True,
            champion=False,
            reasons=[f"{text}: not {need}; {stats}"],
            comparison=comparison,
        )
    if comparison.p_value >= rules.max_p_value:
        return Decision(
            candidate=True,
            champion=False,
            reasons=[
                f"{text}: not significantly better (p >= {rules.max_p_value:g}); {stats}; "
                "stays candidate"
            ],
            comparison=comparison,
        )
    return Decision(
        candidate=True,
        champion=True,
        reasons=[f"{text}: significantly better; {stats}"],
        comparison=comparison,
    )
