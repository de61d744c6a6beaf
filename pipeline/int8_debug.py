"""``onedge int8-debug`` and the validation step's automatic INT8 repair.

An ONNX INT8 artifact whose agreement with the FP32 student on a target is below the gate is
measured on that target (its predicted classes say which images flipped there), repaired by
:func:`export.int8_artifact.repair_artifact` (nodes kept in float until the gate or the limit)
and the repaired artifact validated on the same target like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.config import Tolerances
from export.int8_artifact import calibration_from_config, normalise_inputs, repair_artifact
from export.int8_repair import DEFAULT_MAX_NODES, RepairError, RepairOutcome
from export.manifest import EVAL_FILE, read_export
from targets import Target, ValidationReport, ValidationSettings, validate_artifacts
from targets.gates import GatePolicy


@dataclass
class Int8Debug:
    """What int8-debug found and did on one target."""

    artifact: str
    target: str
    gate: float
    agreement: float | None  # on the target, before the repair
    outcome: RepairOutcome | None  # None: the artifact met the gate, nothing to repair
    repaired_report: ValidationReport | None = None


def gate_of(policy: GatePolicy) -> float:
    """The agreement an INT8 artifact must reach: the policy's, else the export's tolerance."""
    if policy.min_agreement is not None:
        return policy.min_agreement
    return Tolerances().int8_min_agreement


def read_calibration(path: Path | None, export_dir: Path, artifact: str) -> tuple[np.ndarray, str]:
    """Normalised calibration images: ``path`` (an .npz with ``images`` as the artifact takes
    them), or the calibration split the export used."""
    manifest = read_export(export_dir)[artifact]
    if path is None:
        return calibration_from_config(manifest), "the export's calibration split"
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
    except (OSError, KeyError, ValueError) as exc:
        raise RepairError(f"{path} is not an .npz file with an 'images' array: {exc}") from None
    return normalise_inputs(manifest, images), f"{Path(path).name}"


def int8_debug(
    export_dir: Path,
    target: Target,
    artifact: str,
    out_dir: Path,
    settings: ValidationSettings,
    policy: GatePolicy,
    calibration: Path | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Int8Debug:
    """Measure ``artifact`` on ``target``; below the gate, repair it and validate the repair.

    Reports go to ``out_dir/before`` and ``out_dir/after``; the repaired artifact is written
    into ``export_dir`` (and its ``export.json``).
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    if artifact not in read_export(export_dir):
        raise RepairError(f"{export_dir} has no artifact {artifact!r}")
    gate = gate_of(policy)
    eval_set = export_dir / EVAL_FILE
    before = validate_artifacts(
        export_dir / artifact, target, out_dir / "before", settings, policy, eval_set
    )
    measured = before.result(artifact)
    found = Int8Debug(artifact, target.name, gate, measured.agreement, None)
    if measured.agreement is not None and measured.agreement >= gate:
        return found
    images, source = read_calibration(calibration, export_dir, artifact)
    found.outcome = repair_artifact(
        export_dir,
        artifact,
        images,
        gate,
        max_nodes,
        target_predicted=measured.predicted_classes(),
        calibration_source=source,
    )
    if found.outcome.repaired:
        found.repaired_report = validate_artifacts(
            export_dir / found.outcome.repaired, target, out_dir / "after", settings, policy,
            eval_set,
        )  # fmt: skip
    return found


def below_gate(report: ValidationReport, policy: GatePolicy) -> list[str]:
    """The ONNX INT8 artifacts of a report whose agreement is below the gate (not repairs)."""
    gate = gate_of(policy)
    return [
        r.artifact
        for r in report.results
        if r.format == "onnx" and r.precision == "int8" and r.agreement is not None
        and r.agreement < gate and not r.artifact.endswith("-repaired")
    ]  # fmt: skip
