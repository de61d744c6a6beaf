"""Numerical parity of an artifact against the PyTorch FP32 student, and top-1 accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from export.errors import ParityError


@dataclass(frozen=True)
class ParityReport:
    """How far ``candidate`` logits are from the reference on ``images`` images."""

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    images: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> ParityReport:
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(
            f"logits shapes differ: reference {reference.shape}, artifact {candidate.shape}"
        )
    if not np.all(np.isfinite(candidate)):
        raise ParityError("the artifact produced NaN or infinite logits")
    diff = np.abs(reference - candidate)
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    return ParityReport(float(diff.max()), float(diff.mean()), agreement, len(reference))


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).argmax(axis=1) == np.asarray(labels)))


def check_parity(
    report: ParityReport,
    what: str,
    max_abs_diff: float | None,
    min_agreement: float,
) -> ParityReport:
    """Raise :class:`ParityError` (one line) when ``report`` is beyond the tolerances."""
    if max_abs_diff is not None and report.max_abs_diff > max_abs_diff:
        raise ParityError(
            f"{what}: max |diff| of logits against PyTorch is {report.max_abs_diff:.3g} on "
            f"{report.images} images, above the tolerance {max_abs_diff:.3g}"
        )
    if report.top1_agreement < min_agreement:
        raise ParityError(
            f"{what}: top-1 agreement with PyTorch is {report.top1_agreement:.2%} on "
            f"{report.images} images, below the required {min_agreement:.2%}"
        )
    return report
