"""Validate an export folder on a target, apply the gates and write ``report.json``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from export.manifest import (
    EVAL_FILE,
    MANIFEST_NAME,
    Manifest,
    read_export,
    verify_artifact,
)
from onedge.files import atomic_write
from targets.base import (
    ArtifactResult,
    Target,
    ValidationReport,
    ValidationSettings,
    parse_target,
)
from targets.errors import EvalSetError, TargetError
from targets.gates import GatePolicy, evaluate

REPORT_NAME = "report.json"
EVAL_SET_NAME = EVAL_FILE


def read_artifacts(artifacts_dir: Path) -> dict[Path, Manifest]:
    """The verified artifacts of an export folder (or of one artifact folder), by folder.

    An export folder is read through its ``export.json`` (:func:`export.manifest.read_export`):
    an incomplete export is refused naming what is missing; every file is checked.
    """
    artifacts_dir = Path(artifacts_dir)
    if (artifacts_dir / MANIFEST_NAME).exists():
        return {artifacts_dir: verify_artifact(artifacts_dir)}
    return {artifacts_dir / name: m for name, m in read_export(artifacts_dir).items()}


def find_artifacts(artifacts_dir: Path) -> list[Path]:
    """The artifact folders under an export folder (or the folder itself if it is one)."""
    return list(read_artifacts(artifacts_dir))


def skipped_result(folder: Path, manifest: Manifest, target: Target) -> ArtifactResult:
    reason = (
        f"{target.name} cannot run {manifest.format} artifacts "
        f"(it runs {', '.join(target.formats)})"
    )
    return ArtifactResult(
        artifact=folder.name,
        format=manifest.format,
        precision=manifest.precision,
        target=target.name,
        sha256=manifest.sha256,
        verdict="skipped",
        reasons=[reason],
    )


def eval_set_digest(path: Path) -> str:
    """sha256 of the eval images and labels (dtype, shape and bytes), the eval set's identity.

    The reference logits in the same file belong to the exported student, so they are left out:
    two students scored on the same images share this digest and can be compared image by image.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [np.ascontiguousarray(data[key]) for key in ("images", "labels")]
    except (OSError, ValueError, KeyError) as exc:
        raise EvalSetError(f"{path} is not an eval set with images and labels: {exc}") from None
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_report(report: ValidationReport, out_dir: Path) -> Path:
    """Write ``report.json`` atomically: a reader sees the old file, the new one, or none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write(out_dir / REPORT_NAME, report.model_dump_json(indent=2))


def validate_artifacts(
    artifacts_dir: Path,
    target: str | Target,
    out_dir: Path,
    settings: ValidationSettings | None = None,
    policy: GatePolicy | None = None,
    eval_set: Path | None = None,
) -> ValidationReport:
    """Measure every artifact under ``artifacts_dir`` on ``target`` and gate it.

    Every artifact's files are checked against its manifest first; one mismatch refuses the
    whole folder before anything is measured. Artifacts of a format the target cannot run are
    reported as ``skipped``. ``out_dir/report.json`` is written only once all measurements are
    in, atomically; on any error no report is written.
    """
    settings = settings or ValidationSettings()
    policy = policy or GatePolicy()
    manifests = read_artifacts(Path(artifacts_dir))
    folders = list(manifests)
    eval_path = Path(eval_set) if eval_set else Path(artifacts_dir) / EVAL_SET_NAME
    if not eval_path.is_file():
        raise EvalSetError(
            f"eval set {eval_path} does not exist: the export writes {EVAL_SET_NAME} next to the "
            "artifacts, or pass --eval-set"
        )
    target = parse_target(target) if isinstance(target, str) else target
    runnable = [f for f in folders if manifests[f].format in target.formats]
    report = target.run(runnable, eval_path, settings) if runnable else None
    if report is None:
        report = ValidationReport(
            target=target.name, target_info=target.describe(), settings=settings
        )
    measured = {r.artifact: r for r in report.results}
    results = []
    for folder in folders:
        result = measured.get(folder.name)
        if result is None and folder in runnable:
            raise TargetError(f"{target.name} returned no result for {folder.name}")
        if result is None:
            results.append(skipped_result(folder, manifests[folder], target))
            continue
        result.isa = report.target_info.isa if result.latency_ms is not None else None
        if result.verdict is not None:  # the target could not run it; it says why
            results.append(result)
            continue
        verdict = evaluate(result, policy, target.name, report.target_info.emulated)
        result.verdict = "pass" if verdict.passed else "fail"
        result.reasons, result.checks = verdict.reasons, verdict.checks
        results.append(result)
    report.results = results
    report.policy = policy.model_dump()
    report.artifacts_dir = str(Path(artifacts_dir).resolve())
    report.eval_set = str(eval_path.resolve())
    report.eval_set_sha256 = eval_set_digest(eval_path)
    report.passed = all(r.verdict != "fail" for r in results) and any(
        r.verdict == "pass" for r in results
    )
    write_report(report, Path(out_dir))
    return report
