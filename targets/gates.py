"""Pass or fail: a policy from the config applied to one measured artifact."""

from __future__ import annotations

from pydantic import BaseModel, Field

from onedge.strict import StrictModel
from targets.base import ArtifactResult


class GatePolicy(StrictModel):
    """Limits an artifact must meet; a limit left at None is not checked.

    ``max_p99_ms`` maps a target name (``local-cpu``, or the name given to a board) to its
    p99 latency budget at batch 1; targets not named there use ``default_max_p99_ms``.
    """

    max_top1_drop: float | None = Field(
        0.01, ge=0.0, le=1.0, description="top-1 below the FP32 reference (0.01: one point)"
    )
    min_agreement: float | None = Field(None, ge=0.0, le=1.0, description="fraction")
    max_p99_ms: dict[str, float] = Field(default_factory=dict)
    default_max_p99_ms: float | None = Field(None, gt=0.0)
    min_throughput: float | None = Field(None, gt=0.0, description="images per second")
    max_size_mb: float | None = Field(None, gt=0.0)

    def p99_limit(self, target_name: str) -> float | None:
        return self.max_p99_ms.get(target_name, self.default_max_p99_ms)


class TargetBudget(StrictModel):
    """What one target can afford; a limit left at None is not checked."""

    max_p99_ms: float | None = Field(None, gt=0.0, description="p99 latency at batch 1")
    max_size_mb: float | None = Field(None, gt=0.0)
    min_top1: float | None = Field(None, ge=0.0, le=1.0, description="fraction")


class Verdict(BaseModel):
    passed: bool
    reasons: list[str] = Field(default_factory=list)  # why it failed; empty when it passed
    checks: list[str] = Field(default_factory=list)  # every check made, passed or not


def evaluate(
    result: ArtifactResult, policy: GatePolicy, target_name: str, emulated: str | None = None
) -> Verdict:
    """Check one measured artifact against the policy for ``target_name``.

    On an emulated board (``emulated`` names the emulator) latency and throughput are the
    emulator's, not the board's: their gates are skipped, and ``checks`` says so.
    """
    reasons: list[str] = []
    checks: list[str] = []

    def check(ok: bool, text: str) -> None:
        checks.append(f"{'ok' if ok else 'FAIL'}: {text}")
        if not ok:
            reasons.append(text)

    if result.top1 is None or result.latency_ms is None:
        return Verdict(passed=False, reasons=["the artifact was not measured"])
    if policy.max_top1_drop is not None:
        if result.top1_drop is None:
            check(False, "top-1 drop unknown: the eval set has no reference_logits")
        else:
            check(
                result.top1_drop <= policy.max_top1_drop,
                f"top-1 drop {100 * result.top1_drop:.2f} points "
                f"(limit {100 * policy.max_top1_drop:.2f})",
            )
    if policy.min_agreement is not None:
        if result.agreement is None:
            check(False, "agreement unknown: the eval set has no reference_logits")
        else:
            check(
                result.agreement >= policy.min_agreement,
                f"agreement {result.agreement:.2%} (minimum {policy.min_agreement:.2%})",
            )
    limit = policy.p99_limit(target_name)
    if emulated and (limit is not None or policy.min_throughput is not None):
        checks.append(
            f"skipped: latency and throughput gates, the board is emulated ({emulated}): its "
            "timings are the emulator's"
        )
        limit = None
    if limit is not None:
        p99 = result.latency_ms.p99
        check(p99 <= limit, f"p99 latency {p99:.3f} ms on {target_name} (limit {limit:.3f} ms)")
    if policy.min_throughput is not None and not emulated:
        rate = result.throughput or 0.0
        check(
            rate >= policy.min_throughput,
            f"throughput {rate:.1f} img/s at batch {result.throughput_batch} "
            f"(minimum {policy.min_throughput:.1f})",
        )
    if policy.max_size_mb is not None:
        size = result.size_mb or 0.0
        check(size <= policy.max_size_mb, f"size {size:.2f} MB (limit {policy.max_size_mb:.2f})")
    return Verdict(passed=not reasons, reasons=reasons, checks=checks)
