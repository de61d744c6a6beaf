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
from onedge.errors import OnedgeError, first_line
from pipeline.config import ValidateConfig
from pipeline.run_folder import RunFolder
from targets import Target, ValidationReport, ValidationSettings, validate_artifacts
from targets.base import ArtifactResult, parse_target
from targets.gates import GatePolicy
from targets.validate import write_report


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
    measured: ArtifactResult | None = None,
) -> Int8Debug:
    """Measure ``artifact`` on ``target`` (unless ``measured`` holds that measurement); below
    the gate, repair it and validate the repair.

    Reports go to ``out_dir/before`` and ``out_dir/after``; the repaired artifact is written
    into ``export_dir`` (and its ``export.json``).
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    if artifact not in read_export(export_dir):
        raise RepairError(f"{export_dir} has no artifact {artifact!r}")
    gate = gate_of(policy)
    eval_set = export_dir / EVAL_FILE
    if measured is None:
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


def repair_below_gate(
    export_dir: Path,
    target: Target,
    report: ValidationReport,
    out_dir: Path,
    max_nodes: int,
    settings: ValidationSettings,
    policy: GatePolicy,
    calibration: Path | None = None,
) -> list[Int8Debug]:
    """The validation step's hook: repair every ONNX INT8 artifact of ``report`` below the gate
    on its target, and add each repaired artifact's result to ``report`` (its ``passed`` made
    again), so it is chosen and registered like any other. A repair that fails is recorded in
    its artifact's reasons; the others go on."""
    found = []
    for name in below_gate(report, policy) if max_nodes > 0 else []:
        result = report.result(name)
        try:
            debug = int8_debug(export_dir, target, name, out_dir / name, settings, policy,
                               calibration, max_nodes, measured=result)  # fmt: skip
        except OnedgeError as exc:
            result.reasons.append(f"INT8 repair failed: {first_line(exc)}")
            continue
        found.append(debug)
        if debug.repaired_report is not None:
            report.results += debug.repaired_report.results
    report.passed = all(r.verdict != "fail" for r in report.results) and any(
        r.verdict == "pass" for r in report.results
    )
    return found


def repair_int8_below_gate(
    spec: str, run: RunFolder, cfg: ValidateConfig, report: ValidationReport
) -> ValidationReport:
    """``validate_task``'s hook: :func:`repair_below_gate` on one target of a run; when it
    repaired something, the target's report.json is written again with the new results."""
    if cfg.int8_repair_max_nodes == 0 or not below_gate(report, cfg.gates):
        return report
    target = parse_target(spec, **cfg.boards.get(spec, {}))
    out = run.target_dir(spec)
    found = repair_below_gate(
        run.export, target, report, out / "int8-debug", cfg.int8_repair_max_nodes,
        cfg.settings, cfg.gates,
    )  # fmt: skip
    if found:
        write_report(report, out)
    return report


def repair_lines(export_document: dict) -> list[str]:
    """One report line per repaired artifact of an export.json: agreement before and after,
    the gate, and the nodes kept in float."""
    lines = []
    for record in export_document.get("artifacts", []):
        facts = (record.get("extra") or {}).get("int8_repair")
        if not isinstance(facts, dict):
            continue
        nodes = ", ".join(
            f"`{n.get('node')}` ({n.get('op_type')})" for n in facts.get("nodes_in_float", [])
        )
        lines.append(
            f"{record.get('folder')} (from {facts.get('repaired_from', {}).get('artifact')}): "
            f"agreement {facts.get('agreement_before', 0):.2%} -> {facts.get('agreement_after', 0):.2%}, "
            f"gate {facts.get('gate', 0):.2%} {'met' if facts.get('met_gate') else 'not met'}; "
            f"kept in float: {nodes or 'none'}"
        )
    return lines
