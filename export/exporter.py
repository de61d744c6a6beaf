"""``export_checkpoint``: a multi-branch checkpoint -> one artifact folder per format and precision.

DIR/torch-fp32/      student.pt2 (torch.export) + manifest.json
DIR/<format>-<prec>/ model files + manifest.json, for every requested format and precision
DIR/<format>-<prec>-b1/  the same model with a static [1, C, H, W] input, for the formats in
                     ``static_batch1`` (batch-1 latency; the dynamic one serves batches)
DIR/eval.npz         test split (images, labels) and the PyTorch FP32 student's reference_logits
                     (``reference_logits_b<k>`` per exported branch k)
DIR/onnx-int8-rr/    ONNX Runtime INT8 has one artifact per variant (``ort_int8.variants``):
                     onnx-int8 (8-bit weights) and onnx-int8-rr (reduce-range, 7-bit weights,
                     for x86 without VNNI); each manifest's extra["int8_recipe"] says which
                     recipe it is and the instruction sets it is meant for
DIR/export.json      the student's cost, calibration facts, and every artifact's parity/accuracy;
                     ``failed`` lists each artifact that failed its export, with the reason

With ``branches`` = ``all`` or a list, every named student of a family gets its own folders,
prefixed ``s<k>-w<width>-`` (``s2-w0.6-onnx-int8``, ``s2-w0.6-torch-fp32``); each manifest records
branch, width, parameters and MACs, and each student is checked against its own FP32 logits.

With ``settings.embed_preprocessing`` (the default) every artifact, the PyTorch one included,
takes the raw image as the data set stores it (:mod:`export.preprocess`), and ``eval.npz`` holds
raw images too: validation feeds exactly what a deployed application feeds. The parity checks
then run the artifacts on raw images against the PyTorch student on the same images.

Every artifact is measured the same way: parity against the PyTorch student on the calibration
images (max |diff|, top-1 agreement; failing loudly beyond the tolerance of its precision), and
top-1 on the test split with agreement against the reference; INT8 must stay within
``tolerances.int8_max_top1_drop`` of the FP32 student's test top-1. An artifact that fails a
check (or whose converter or quantiser raises) is that artifact's failure: it is left out and
recorded in ``export.json`` with its reason, and the export goes on; it fails as a whole only
when no artifact is left to validate (one line saying why).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.config import PRECISIONS, ExportConfig
from export.errors import ExportError, ParityError
from export.extract import Student, extract_branch, input_spec, library_versions, save_student
from export.formats import EXPORT_FORMATS, ArtifactFiles, ExportContext
from export.manifest import EVAL_FILE, EXPORT_JSON, OutputSpec, build_manifest, write_manifest
from export.onnx import onnx_metadata, torch_logits, torch_to_onnx
from export.parity import check_parity, compare_logits, top1_accuracy
from export.preprocess import InputContract
from export.publish import build_folder, publish
from onedge.errors import ConfigError, first_line
from onedge.files import atomic_write
from training.errors import DataError


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


@dataclass
class ExportResult:
    out_dir: Path
    student: dict[str, Any]
    artifacts: list[ArtifactRecord]
    export_json: Path
    eval_file: Path
    reference_top1: float
    students: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # artifacts that failed, why

    def artifact(self, name: str) -> ArtifactRecord:
        for record in self.artifacts:
            if record.name == name:
                return record
        raise KeyError(f"no artifact {name!r}; have {[r.name for r in self.artifacts]}")


def plan_artifacts(settings: ExportConfig) -> list[tuple[str, str]]:
    """(format, precision) pairs to write, checked against the backend registry by name."""
    unknown = [name for name in settings.formats if name not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(
            f"unknown export format {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(EXPORT_FORMATS.names())}"
        )
    bad = [p for p in settings.precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(
            f"unknown precision {', '.join(map(repr, bad))}; known: {', '.join(PRECISIONS)}"
        )
    static = [
        name
        for name in settings.static_batch1
        if name not in EXPORT_FORMATS or not EXPORT_FORMATS.get(name).static_batch1
    ]
    if static:
        offering = [n for n in EXPORT_FORMATS.names() if EXPORT_FORMATS.get(n).static_batch1]
        raise ConfigError(
            f"export.static_batch1: {', '.join(map(repr, static))} has no static batch-1 "
            f"variant; formats that have one: {', '.join(offering)}"
        )
    plan = []
    for name in settings.formats:
        offered = EXPORT_FORMATS.get(name).precisions
        plan += [(name, p) for p in settings.precisions if p in offered]
    return plan


def _gate(precision: str, settings: ExportConfig) -> tuple[float | None, float]:
    tol = settings.tolerances
    if precision == "fp32":
        return tol.fp32_max_abs_diff, tol.fp32_min_agreement
    if precision == "fp16":
        return tol.fp16_max_abs_diff, tol.fp16_min_agreement
    return None, tol.int8_min_agreement


@dataclass
class SplitImages:
    """One split as the body sees it (normalised NCHW float32) and as the artifacts take it."""

    normalised: np.ndarray
    labels: np.ndarray
    inputs: np.ndarray  # raw images in the contract's layout, or ``normalised``


def _split(
    splits: Any, name: str, contract: InputContract, limit: int | None = None
) -> SplitImages:
    from training.data import to_numpy, to_raw_numpy

    dataset = getattr(splits, name, None)
    if dataset is None or len(dataset) == 0:
        raise DataError(
            f"the checkpoint's data set has no {name} split; export needs calibration, "
            "validation and test images (check data.calibration_size and the split fractions)"
        )
    images, labels = to_numpy(dataset, limit=limit)
    if not contract.embedded:
        return SplitImages(images, labels, images)
    raw = contract.arrange(to_raw_numpy(dataset, limit=limit))
    # the body sees exactly what the embedded preprocessing computes from the raw images
    return SplitImages(contract.normalise(raw), labels, raw)


def _raw_dtype(splits: Any) -> str:
    from training.data import to_raw_numpy

    return to_raw_numpy(splits.test, limit=1).dtype.name


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str))


def student_prefix(branch: int, width: float) -> str:
    """Folder prefix of one student of a family: ``s2-w0.6-`` (width with at most 2 decimals)."""
    text = f"{width:.2f}".rstrip("0")
    return f"s{branch}-w{text}{'0' if text.endswith('.') else ''}-"


def resolve_branches(settings: ExportConfig, loaded: Any) -> list[tuple[int, str]]:
    """(branch, folder prefix) for every student to export; one unprefixed for ``deployed``."""
    model = loaded.model
    if settings.branches == "deployed":
        branch = loaded.deployed_branch if settings.branch is None else settings.branch
        return [(branch, "")]
    wanted = list(range(model.num_branches)) if settings.branches == "all" else settings.branches
    bad = [k for k in wanted if not 0 <= k < model.num_branches]
    if bad:
        raise ConfigError(
            f"export.branches names {bad}, but {loaded.path.name} has {model.num_branches} "
            f"branch(es), 0..{model.num_branches - 1}"
        )
    return [(k, student_prefix(k, model.widths[k])) for k in wanted]


def export_checkpoint(checkpoint: Path, out_dir: Path, settings: ExportConfig) -> ExportResult:
    """Export ``checkpoint`` into ``out_dir`` as ``settings`` asks; see the module docstring.

    The export is built beside ``out_dir`` and published atomically (:mod:`export.publish`):
    on any failure ``out_dir`` keeps what it held, and folders no export wrote are never touched.
    """
    final = Path(out_dir)
    with build_folder(final) as build:
        built = _build_export(checkpoint, build, settings)
        publish(build, final)
    records = [replace(r, folder=final / r.folder.name) for r in built.artifacts]
    return replace(
        built,
        out_dir=final,
        artifacts=records,
        export_json=final / EXPORT_JSON,
        eval_file=final / EVAL_FILE,
    )


def _build_export(checkpoint: Path, out_dir: Path, settings: ExportConfig) -> ExportResult:
    """Write the whole export into ``out_dir`` (a fresh, private build folder)."""
    from training.checkpoint import load_checkpoint
    from training.data import load_data

    plan = plan_artifacts(settings)  # unknown names fail before any work
    if settings.threads:
        torch.set_num_threads(settings.threads)
    loaded = load_checkpoint(Path(checkpoint))
    chosen = resolve_branches(settings, loaded)
    splits = load_data(loaded.config.data)
    contract = InputContract.for_spec(
        loaded.spec, settings.embed_preprocessing, settings.input_layout, _raw_dtype(splits)
    )
    cal = _split(splits, "calibration", contract, settings.calibration_size)
    val = _split(splits, "val", contract)
    test = _split(splits, "test", contract, settings.eval_limit)
    calibration, validation = cal.normalised, (val.normalised, val.labels)
    test_images, test_labels = test.normalised, test.labels
    students = [
        (extract_branch(loaded, k, images=validation[0][:256]), prefix) for k, prefix in chosen
    ]

    out_dir = Path(out_dir)
    config = {
        "export": settings.model_dump(mode="json"),
        "training": loaded.config.model_dump(mode="json"),
    }
    references = {
        student.branch: torch_logits(student.module, test_images) for student, _ in students
    }
    arrays = {f"reference_logits_b{k}": v.astype(np.float32) for k, v in references.items()}
    if len(students) == 1:  # one student: the plain key every runner reads
        arrays["reference_logits"] = references[students[0][0].branch].astype(np.float32)
    np.savez(
        out_dir / EVAL_FILE,
        images=test.inputs if contract.embedded else test_images.astype(np.float32),
        labels=test_labels.astype(np.int64),
        **arrays,
    )

    records: list[ArtifactRecord] = []
    failures: list[dict[str, Any]] = []
    summaries = []
    with tempfile.TemporaryDirectory(prefix="onedge-export-") as tmp:
        for student, prefix in students:
            reference = references[student.branch]
            reference_top1 = top1_accuracy(reference, test_labels)
            calibration_reference = torch_logits(student.module, calibration)
            torch_folder = f"{prefix}torch-fp32"
            saved = save_student(student, _fresh(out_dir / torch_folder), config, contract)
            if contract.embedded:  # the saved program on raw images against the student
                _check_saved_student(out_dir / torch_folder, cal.inputs, calibration_reference)
            work = Path(tmp) / f"s{student.branch}"
            work.mkdir()
            onnx_fp32 = torch_to_onnx(
                student.module,
                work / "model-fp32.onnx",
                torch.from_numpy(calibration[:1]),
                opset=settings.opset,
                metadata=_metadata(student),
            )
            ctx = ExportContext(
                settings, student, work, onnx_fp32, calibration, validation, contract
            )
            built, failed = _export_artifacts(
                plan,
                ctx,
                out_dir,
                prefix,
                config,
                calibration=(cal.inputs, calibration_reference),
                test=(test.inputs, test_labels, reference, reference_top1),
            )
            records += built
            failures += failed
            summaries.append(
                {
                    **student.summary(),
                    "prefix": prefix,
                    "torch_fp32": {
                        "folder": torch_folder,
                        "sha256": saved.sha256,
                        "test_top1": reference_top1,
                    },
                }
            )

    lead = next((s for s in summaries if s["branch"] == loaded.deployed_branch), summaries[0])
    summary = {k: v for k, v in lead.items() if k not in ("prefix", "torch_fp32")}
    document = {
        "created": datetime.now(timezone.utc).isoformat(),
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": loaded.sha256,
        "dataset": loaded.spec.to_dict(),
        "student": summary,
        "students": summaries,
        "torch_fp32": lead["torch_fp32"],
        "calibration": {
            "split": "calibration",
            "requested": settings.calibration_size,
            "images": len(calibration),
        },
        "eval": {"file": EVAL_FILE, "split": "test", "images": len(test_images)},
        "input": {
            **contract.to_dict(),
            "shape": [
                -1,
                *(contract.sample_shape if contract.embedded else students[0][0].input_chw),
            ],
            "class_names": list(loaded.spec.class_names),
        },
        "settings": settings.model_dump(mode="json"),
        "versions": library_versions(),
        "artifacts": [record.to_dict() for record in records],
        "failed": failures,
    }
    if not records:
        first = failures[0] if failures else {"name": "-", "reason": "nothing was planned"}
        raise ExportError(
            f"nothing left to validate: every artifact failed its export ({len(failures)} of "
            f"{len(failures)}; first: {first['name']}: {first['reason']})"
        )
    _write_json(out_dir / EXPORT_JSON, document)
    return ExportResult(
        out_dir,
        summary,
        records,
        out_dir / EXPORT_JSON,
        out_dir / EVAL_FILE,
        lead["torch_fp32"]["test_top1"],
        students=summaries,
        failed=failures,
    )


def _export_artifacts(
    plan: list[tuple[str, str]],
    ctx: ExportContext,
    out_dir: Path,
    prefix: str,
    config: dict[str, Any],
    calibration: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray, float],
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
        for variant in exporter.variants(ctx.settings, precision):
            dynamic = out_dir / f"{prefix}{fmt}-{precision}{variant}"
            builds = [
                (dynamic, lambda f, e=exporter, p=precision, v=variant: e.build(ctx, p, f, v))
            ]
            if fmt in ctx.settings.static_batch1 and not variant:
                builds.append((
                    out_dir / f"{prefix}{fmt}-{precision}-b1",
                    lambda f, e=exporter, p=precision, d=dynamic: e.build_static(ctx, p, d, f),
                ))  # fmt: skip
            for target, build in builds:
                if failed and failed[-1]["name"] == dynamic.name and target != dynamic:
                    failed.append(_failure(target.name, fmt, precision, ctx, "its source "
                                           f"{dynamic.name} failed"))  # fmt: skip
                    continue
                folder = _fresh(target)
                try:
                    record = _measure_and_record(
                        fmt, precision, folder, build(folder), ctx.student, ctx.settings,
                        config, ctx.contract, calibration=calibration, test=test,
                    )  # fmt: skip
                except Exception as exc:  # that artifact's failure: recorded, the rest go on
                    shutil.rmtree(folder, ignore_errors=True)  # no half-written artifact stays
                    failed.append(_failure(target.name, fmt, precision, ctx, first_line(exc), exc))
                    continue
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                records.append(record)
    return records, failed


def _failure(
    name: str, fmt: str, precision: str, ctx: ExportContext, reason: str, exc=None
) -> dict[str, Any]:
    """What export.json and the report say about an artifact that failed its export."""
    return {
        "name": name,
        "format": fmt,
        "precision": precision,
        "branch": ctx.student.branch,
        "error": type(exc).__name__ if exc is not None else "skipped",
        "reason": reason,
    }


def _check_saved_student(folder: Path, images: np.ndarray, reference: np.ndarray) -> None:
    from export.extract import load_student

    module = load_student(folder)
    dtype = getattr(torch, images.dtype.name)
    with torch.inference_mode():
        logits = np.concatenate([
            module(torch.from_numpy(np.ascontiguousarray(chunk)).to(dtype)).numpy()
            for chunk in np.split(images, range(256, len(images), 256))
        ])  # fmt: skip
    # the saved program is the student behind the preprocessing: only float order may differ
    check_parity(
        compare_logits(reference, logits), "torch-fp32 (student.pt2 on raw images)", 1e-5, 1.0
    )


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _metadata(student: Student) -> dict[str, str]:
    spec = student.spec
    return onnx_metadata(
        list(spec.class_names),
        list(spec.mean),
        list(spec.std),
        float(spec.scale),
        student.checkpoint_sha256,
        student.branch,
    )


def _cost(student: Student) -> dict[str, Any]:
    """What a manifest says about its student: branch, width, parameters and MACs."""
    return {
        "branch": student.branch,
        "width": student.width,
        "parameters": student.student_cost.parameters,
        "macs": student.student_cost.macs,
    }


def _measure_and_record(
    fmt: str,
    precision: str,
    folder: Path,
    built: ArtifactFiles,
    student: Student,
    settings: ExportConfig,
    config: dict[str, Any],
    contract: InputContract,
    calibration: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray, float],
) -> ArtifactRecord:
    name = folder.name  # <format>-<precision>, or s<k>-w<width>-<format>-<precision>
    max_diff, min_agreement = _gate(precision, settings)
    images, reference = calibration
    parity = compare_logits(reference, built.run(images))
    check_parity(parity, f"{name} ({built.evaluated_with})", max_diff, min_agreement)
    test_images, test_labels, test_reference, reference_top1 = test
    logits = built.run(test_images)
    top1 = top1_accuracy(logits, test_labels)
    test_parity = compare_logits(test_reference, logits)
    drop = reference_top1 - top1
    if precision == "int8" and drop > settings.tolerances.int8_max_top1_drop:
        raise ParityError(
            f"{name}: test top-1 {top1:.2%} is {drop * 100:.2f} points below the FP32 student's "
            f"{reference_top1:.2%}, beyond the allowed "
            f"{settings.tolerances.int8_max_top1_drop * 100:.2f}"
        )
    test_figures = {
        "images": len(test_images),
        "top1": top1,
        "top1_drop_vs_torch_fp32": drop,
        "top1_agreement": test_parity.top1_agreement,
        "max_abs_diff": test_parity.max_abs_diff,
    }
    parity_figures = {"split": "calibration", **parity.to_dict()}
    extra = {
        **built.extra,
        "evaluated_with": built.evaluated_with,
        "parity": parity_figures,
        "test": test_figures,
    }
    inputs, batch = input_spec(student.spec, contract), -1
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
        config=config,
        versions=library_versions(),
        extra={**extra, "student": _cost(student)},
    )
    write_manifest(folder, manifest)
    return ArtifactRecord(
        name,
        fmt,
        precision,
        folder,
        manifest.sha256,
        built.model_file,
        built.evaluated_with,
        parity_figures,
        test_figures,
        built.extra,
    )
