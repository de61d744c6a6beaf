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
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.artifacts import (
    ArtifactRecord,
    StudentArtifacts,
    StudentReference,
    export_artifacts,
    fresh_folder,
)
from export.config import PRECISIONS, ExportConfig
from export.errors import ExportError
from export.extract import Student, extract_branch, library_versions, load_student, save_student
from export.formats import EXPORT_FORMATS, ExportContext
from export.manifest import EVAL_FILE, EXPORT_JSON
from export.onnx import onnx_metadata, torch_logits, torch_to_onnx
from export.parity import check_parity, compare_logits, top1_accuracy
from export.preprocess import InputContract
from export.publish import build_folder, publish
from export.splits import SplitImages, raw_dtype, split_images
from onedge.errors import ConfigError
from onedge.files import atomic_write
from training.checkpoint import LoadedCheckpoint, load_checkpoint
from training.data import load_data


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


@dataclass
class ExportInputs:
    """What every student's export reads: the checkpoint, the input contract and the splits."""

    settings: ExportConfig
    loaded: LoadedCheckpoint
    contract: InputContract
    calibration: SplitImages
    validation: SplitImages
    test: SplitImages
    students: list[tuple[Student, str]]  # each student with its folder prefix
    config: dict[str, Any]  # the export and training configs every manifest records


def _load_inputs(checkpoint: Path, settings: ExportConfig) -> ExportInputs:
    """The checkpoint, its splits as the artifacts take them, and the students to export."""
    loaded = load_checkpoint(Path(checkpoint))
    chosen = resolve_branches(settings, loaded)
    splits = load_data(loaded.config.data)
    contract = InputContract.for_spec(
        loaded.spec, settings.embed_preprocessing, settings.input_layout, raw_dtype(splits)
    )
    cal = split_images(splits, "calibration", contract, settings.calibration_size)
    val = split_images(splits, "val", contract)
    test = split_images(splits, "test", contract, settings.eval_limit)
    students = [
        (extract_branch(loaded, k, images=val.normalised[:256]), prefix) for k, prefix in chosen
    ]
    config = {
        "export": settings.model_dump(mode="json"),
        "training": loaded.config.model_dump(mode="json"),
    }
    return ExportInputs(settings, loaded, contract, cal, val, test, students, config)


def _write_eval_set(out_dir: Path, inputs: ExportInputs) -> dict[int, np.ndarray]:
    """``eval.npz``: the test split and every student's reference logits, keyed by branch."""
    test = inputs.test
    references = {
        student.branch: torch_logits(student.module, test.normalised)
        for student, _ in inputs.students
    }
    arrays = {f"reference_logits_b{k}": v.astype(np.float32) for k, v in references.items()}
    if len(inputs.students) == 1:  # one student: the plain key every runner reads
        arrays["reference_logits"] = references[inputs.students[0][0].branch].astype(np.float32)
    np.savez(
        out_dir / EVAL_FILE,
        images=test.inputs if inputs.contract.embedded else test.normalised.astype(np.float32),
        labels=test.labels.astype(np.int64),
        **arrays,
    )
    return references


def _build_export(checkpoint: Path, out_dir: Path, settings: ExportConfig) -> ExportResult:
    """Write the whole export into ``out_dir`` (a fresh, private build folder)."""
    plan = plan_artifacts(settings)  # unknown names fail before any work
    if settings.threads:
        torch.set_num_threads(settings.threads)
    inputs = _load_inputs(checkpoint, settings)
    out_dir = Path(out_dir)
    references = _write_eval_set(out_dir, inputs)
    records: list[ArtifactRecord] = []
    failures: list[dict[str, Any]] = []
    summaries = []
    with tempfile.TemporaryDirectory(prefix="onedge-export-") as tmp:
        for student, prefix in inputs.students:
            work = Path(tmp) / f"s{student.branch}"
            work.mkdir()
            built, failed, summary = _export_student(
                plan, inputs, student, prefix, references[student.branch], out_dir, work
            )
            records += built
            failures += failed
            summaries.append(summary)
    return _write_index(checkpoint, out_dir, inputs, summaries, records, failures)


def _export_student(
    plan: list[tuple[str, str]],
    inputs: ExportInputs,
    student: Student,
    prefix: str,
    test_logits: np.ndarray,
    out_dir: Path,
    work: Path,
) -> tuple[list[ArtifactRecord], list[dict[str, Any]], dict[str, Any]]:
    """One student: its torch-fp32 folder, its FP32 ONNX graph, then every planned artifact."""
    settings, cal, test = inputs.settings, inputs.calibration, inputs.test
    calibration = cal.normalised
    reference = StudentReference(
        cal.inputs,
        torch_logits(student.module, calibration),
        test.inputs,
        test.labels,
        test_logits,
        top1_accuracy(test_logits, test.labels),
    )
    torch_folder = f"{prefix}torch-fp32"
    saved = save_student(
        student, fresh_folder(out_dir / torch_folder), inputs.config, inputs.contract
    )
    if inputs.contract.embedded:  # the saved program on raw images against the student
        _check_saved_student(out_dir / torch_folder, cal.inputs, reference.calibration_logits)
    onnx_fp32 = torch_to_onnx(
        student.module,
        work / "model-fp32.onnx",
        torch.from_numpy(calibration[:1]),
        opset=settings.opset,
        metadata=_metadata(student),
    )
    validation = (inputs.validation.normalised, inputs.validation.labels)
    ctx = ExportContext(
        settings, student, work, onnx_fp32, calibration, validation, inputs.contract
    )
    job = StudentArtifacts(ctx, out_dir, prefix, inputs.config, reference)
    records, failed = export_artifacts(plan, job)
    summary = {
        **student.summary(),
        "prefix": prefix,
        "torch_fp32": {
            "folder": torch_folder,
            "sha256": saved.sha256,
            "test_top1": reference.test_top1,
        },
    }
    return records, failed, summary


def _write_index(
    checkpoint: Path,
    out_dir: Path,
    inputs: ExportInputs,
    summaries: list[dict[str, Any]],
    records: list[ArtifactRecord],
    failures: list[dict[str, Any]],
) -> ExportResult:
    """``export.json``: the students, the data, every artifact and every failure."""
    if not records:
        first = failures[0] if failures else {"name": "-", "reason": "nothing was planned"}
        raise ExportError(
            f"nothing left to validate: every artifact failed its export ({len(failures)} of "
            f"{len(failures)}; first: {first['name']}: {first['reason']})"
        )
    settings, loaded, contract = inputs.settings, inputs.loaded, inputs.contract
    lead = next((s for s in summaries if s["branch"] == loaded.deployed_branch), summaries[0])
    summary = {k: v for k, v in lead.items() if k not in ("prefix", "torch_fp32")}
    sample_shape = contract.sample_shape if contract.embedded else inputs.students[0][0].input_chw
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
            "images": len(inputs.calibration.normalised),
        },
        "eval": {"file": EVAL_FILE, "split": "test", "images": len(inputs.test.normalised)},
        "input": {
            **contract.to_dict(),
            "shape": [-1, *sample_shape],
            "class_names": list(loaded.spec.class_names),
        },
        "settings": settings.model_dump(mode="json"),
        "versions": library_versions(),
        "artifacts": [record.to_dict() for record in records],
        "failed": failures,
    }
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


def _check_saved_student(folder: Path, images: np.ndarray, reference: np.ndarray) -> None:
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
