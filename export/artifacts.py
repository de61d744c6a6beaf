"""Every planned artifact of one student: built, measured against the PyTorch student, recorded.

Each artifact is measured the same way (see :mod:`export.exporter`): parity against the PyTorch
student on the calibration images, then top-1 on the test split with agreement against the
reference; INT8 must stay within ``tolerances.int8_max_top1_drop`` of the FP32 student's test
top-1. One artifact's failure is that artifact's: it is recorded with its reason, its folder
removed, and the others are still built.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.config import ExportConfig
from export.errors import ParityError
from export.extract import Student, input_spec, library_versions
from export.formats import EXPORT_FORMATS, ArtifactFiles, ExportContext, FormatExporter
from export.manifest import OutputSpec, build_manifest, write_manifest
from export.parity import ParityReport, check_parity, compare_logits, top1_accuracy
from onedge.errors import first_line


@dataclass
class ArtifactRecord:
    """One artifact folder and how it measured against the PyTorch FP32 student."""

    name: str
    format: str
    precision: str
    folder: Path
    sha256: str
    model_file: str
    evaluated_with: str
    parity: dict[str, Any]
    test: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["folder"] = self.folder.name
        return out


@dataclass(frozen=True)
class StudentReference:
    """What every artifact of one student is measured against: the PyTorch student's logits."""

    calibration_inputs: np.ndarray  # as the artifacts take them (raw images when embedded)
    calibration_logits: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    test_logits: np.ndarray
    test_top1: float


@dataclass(frozen=True)
class StudentArtifacts:
    """One student's artifacts to build: its context, where they go, and their reference."""

    ctx: ExportContext
    out_dir: Path
    prefix: str  # folder prefix of the student ("" for the one deployed student)
    config: dict[str, Any]  # the export and training configs every manifest records
    reference: StudentReference


@dataclass(frozen=True)
class PlannedArtifact:
    """One artifact folder to build: a dynamic-batch one, or the static batch-1 one of ``source``."""

    fmt: str
    precision: str
    variant: str
    folder: Path
    source: Path | None = None  # the dynamic artifact a static batch-1 one is made from

    def build(self, exporter: FormatExporter, ctx: ExportContext, folder: Path) -> ArtifactFiles:
        if self.source is None:
            return exporter.build(ctx, self.precision, folder, self.variant)
        return exporter.build_static(ctx, self.precision, self.source, folder)


def fresh_folder(folder: Path) -> Path:
    """``folder``, emptied (or created)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _planned(
    job: StudentArtifacts, fmt: str, precision: str, variant: str
) -> list[PlannedArtifact]:
    """The dynamic artifact of one variant, then its static batch-1 one where asked for."""
    dynamic = job.out_dir / f"{job.prefix}{fmt}-{precision}{variant}"
    planned = [PlannedArtifact(fmt, precision, variant, dynamic)]
    if fmt in job.ctx.settings.static_batch1 and not variant:
        static = job.out_dir / f"{job.prefix}{fmt}-{precision}-b1"
        planned.append(PlannedArtifact(fmt, precision, variant, static, source=dynamic))
    return planned


def export_artifacts(
    plan: list[tuple[str, str]], job: StudentArtifacts
) -> tuple[list[ArtifactRecord], list[dict[str, Any]]]:
    """Every planned artifact of one student: the records, and the artifacts that failed.

    One artifact's failure is that artifact's: a parity or accuracy gate, a quantiser or a
    converter raising, is recorded with its reason (and its folder removed), and the others
    are still built. A static batch-1 artifact whose dynamic source failed is not attempted.
    """
    records: list[ArtifactRecord] = []
    failed: list[dict[str, Any]] = []
    for fmt, precision in plan:
        exporter = EXPORT_FORMATS.get(fmt)()
        for variant in exporter.variants(job.ctx.settings, precision):
            for item in _planned(job, fmt, precision, variant):
                if item.source is not None and failed and failed[-1]["name"] == item.source.name:
                    reason = f"its source {item.source.name} failed"
                    failed.append(_failure(item, job.ctx, reason))
                    continue
                folder = fresh_folder(item.folder)
                try:
                    record = measure_and_record(
                        job, item, folder, item.build(exporter, job.ctx, folder)
                    )
                except Exception as exc:  # that artifact's failure: recorded, the rest go on
                    shutil.rmtree(folder, ignore_errors=True)  # no half-written artifact stays
                    failed.append(_failure(item, job.ctx, first_line(exc), exc))
                    continue
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                records.append(record)
    return records, failed


def _failure(
    item: PlannedArtifact, ctx: ExportContext, reason: str, exc: BaseException | None = None
) -> dict[str, Any]:
    """What export.json and the report say about an artifact that failed its export."""
    return {
        "name": item.folder.name,
        "format": item.fmt,
        "precision": item.precision,
        "branch": ctx.student.branch,
        "error": type(exc).__name__ if exc is not None else "skipped",
        "reason": reason,
    }


def _gate(precision: str, settings: ExportConfig) -> tuple[float | None, float]:
    tol = settings.tolerances
    if precision == "fp32":
        return tol.fp32_max_abs_diff, tol.fp32_min_agreement
    if precision == "fp16":
        return tol.fp16_max_abs_diff, tol.fp16_min_agreement
    return None, tol.int8_min_agreement


def _calibration_parity(
    name: str, precision: str, built: ArtifactFiles, job: StudentArtifacts
) -> ParityReport:
    """The artifact against the student on the calibration images; raises beyond the gate."""
    max_diff, min_agreement = _gate(precision, job.ctx.settings)
    ref = job.reference
    parity = compare_logits(ref.calibration_logits, built.run(ref.calibration_inputs))
    check_parity(parity, f"{name} ({built.evaluated_with})", max_diff, min_agreement)
    return parity


def _test_figures(
    name: str, precision: str, built: ArtifactFiles, job: StudentArtifacts
) -> dict[str, Any]:
    """Top-1 on the test split and agreement with the student; INT8 within its allowed drop."""
    ref = job.reference
    logits = built.run(ref.test_inputs)
    top1 = top1_accuracy(logits, ref.test_labels)
    test_parity = compare_logits(ref.test_logits, logits)
    drop = ref.test_top1 - top1
    allowed = job.ctx.settings.tolerances.int8_max_top1_drop
    if precision == "int8" and drop > allowed:
        raise ParityError(
            f"{name}: test top-1 {top1:.2%} is {drop * 100:.2f} points below the FP32 student's "
            f"{ref.test_top1:.2%}, beyond the allowed {allowed * 100:.2f}"
        )
    return {
        "images": len(ref.test_inputs),
        "top1": top1,
        "top1_drop_vs_torch_fp32": drop,
        "top1_agreement": test_parity.top1_agreement,
        "max_abs_diff": test_parity.max_abs_diff,
    }


def _cost(student: Student) -> dict[str, Any]:
    """What a manifest says about its student: branch, width, parameters and MACs."""
    return {
        "branch": student.branch,
        "width": student.width,
        "parameters": student.student_cost.parameters,
        "macs": student.student_cost.macs,
    }


def _write_artifact_manifest(
    item: PlannedArtifact, folder: Path, built: ArtifactFiles, job: StudentArtifacts, extra: dict
) -> str:
    """Write the artifact's manifest (its input shape as built); returns the artifact's sha256."""
    student, fmt, precision = job.ctx.student, item.fmt, item.precision
    inputs, batch = input_spec(student.spec, job.ctx.contract), -1
    if built.static_batch is not None:  # the manifest says which shape the artifact takes
        batch = built.static_batch
        inputs.shape = [batch, *inputs.shape[1:]]
        extra["static_batch"] = batch
    manifest = build_manifest(
        folder,
        built.files,
        built.model_file,
        name=f"{student.spec.name}-branch{student.branch}-{fmt}-{precision}",
        format=fmt,
        precision=precision,
        input=inputs,
        output=OutputSpec(shape=[batch, student.spec.num_classes]),
        class_names=list(student.spec.class_names),
        source_checkpoint_sha256=student.checkpoint_sha256,
        branch=student.branch,
        width=student.width,
        config=job.config,
        versions=library_versions(),
        extra={**extra, "student": _cost(student)},
    )
    write_manifest(folder, manifest)
    return manifest.sha256


def measure_and_record(
    job: StudentArtifacts, item: PlannedArtifact, folder: Path, built: ArtifactFiles
) -> ArtifactRecord:
    """Check one built artifact against the student, write its manifest, and record it."""
    name = folder.name  # <format>-<precision>, or s<k>-w<width>-<format>-<precision>
    parity = _calibration_parity(name, item.precision, built, job)
    test_figures = _test_figures(name, item.precision, built, job)
    parity_figures = {"split": "calibration", **parity.to_dict()}
    extra = {
        **built.extra,
        "evaluated_with": built.evaluated_with,
        "parity": parity_figures,
        "test": test_figures,
    }
    sha256 = _write_artifact_manifest(item, folder, built, job, extra)
    return ArtifactRecord(
        name,
        item.fmt,
        item.precision,
        folder,
        sha256,
        built.model_file,
        built.evaluated_with,
        parity_figures,
        test_figures,
        built.extra,
    )
