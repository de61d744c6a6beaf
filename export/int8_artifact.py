"""The INT8 repair of one artifact of an export folder (:mod:`export.int8_repair` does the graph).

``repair_artifact`` reads the INT8 artifact, its FP32 sibling and the eval set through the one
reader (:func:`export.manifest.read_export`), repairs the graph, and writes
``<artifact>-repaired`` beside it: a manifest like every other artifact's (the nodes kept in
float and why under ``extra.int8_repair``), added to ``export.json`` so validation and the
registry treat it like any other artifact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from export.int8_repair import (
    DEFAULT_MAX_NODES,
    REPAIRED_SUFFIX,
    RepairError,
    RepairOutcome,
    RepairRound,
    agreement,
    contract_of,
    flipped_indices,
    recipe_of,
    repair_graph,
)
from export.manifest import (
    EVAL_FILE,
    EXPORT_JSON,
    Manifest,
    build_manifest,
    read_export,
    verify_artifact,
    write_manifest,
)
from export.onnx import ort_session, run_onnx
from onedge.files import atomic_write
from training.config import TrainingConfig
from training.data import load_data, to_numpy, to_raw_numpy


def calibration_from_config(manifest: Manifest) -> np.ndarray:
    """The calibration images the export used, normalised: the manifest's data config, its
    calibration split, the first ``export.calibration_size`` images."""
    try:
        training = TrainingConfig.model_validate(manifest.config["training"])
        limit = int(manifest.config["export"]["calibration_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RepairError(
            f"{manifest.name}: the manifest holds no usable training/export config ({exc}); "
            "give the calibration images with --calibration FILE.npz"
        ) from None
    splits = load_data(training.data)
    contract = contract_of(manifest)
    if contract is None:
        return to_numpy(splits.calibration, limit=limit)[0]
    return contract.normalise(contract.arrange(to_raw_numpy(splits.calibration, limit=limit)))


def normalise_inputs(manifest: Manifest, inputs: np.ndarray) -> np.ndarray:
    """Images as the artifact takes them -> what its body takes (normalised NCHW float32)."""
    contract = contract_of(manifest)
    shape = tuple(manifest.input.shape[1:])
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != shape:
        raise RepairError(
            f"calibration images have shape {list(inputs.shape)}; {manifest.name} takes "
            f"[N, {', '.join(map(str, shape))}]"
        )
    if contract is None:
        return np.ascontiguousarray(inputs, dtype=np.float32)
    return contract.normalise(inputs)


def fp32_sibling(manifests: dict[str, Manifest], artifact: str) -> str:
    """The ONNX FP32 artifact of the same student and input shape as ``artifact``."""
    target = manifests[artifact]
    same = [
        name
        for name, m in manifests.items()
        if m.format == "onnx" and m.precision == "fp32" and m.branch == target.branch
        and m.width == target.width and m.input.shape == target.input.shape
    ]  # fmt: skip
    if not same:
        raise RepairError(f"the export holds no ONNX FP32 artifact of {artifact}'s student")
    prefix = artifact.split("onnx-int8")[0]
    return next((n for n in same if n == f"{prefix}onnx-fp32"), same[0])


def read_eval(export_dir: Path, branch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eval images (as the artifacts take them), labels and the branch's FP32 reference logits."""
    path = Path(export_dir) / EVAL_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            key = f"reference_logits_b{branch}"
            key = key if key in data.files else "reference_logits"
            return data["images"], data["labels"], data[key]
    except (OSError, KeyError, ValueError) as exc:
        raise RepairError(f"{path} is not an eval set with reference logits: {exc}") from None


def repair_artifact(
    export_dir: Path,
    artifact: str,
    calibration: np.ndarray,
    gate: float,
    max_nodes: int = DEFAULT_MAX_NODES,
    target_predicted: np.ndarray | None = None,
    calibration_source: str = "the export's calibration split",
) -> RepairOutcome:
    """Repair one ONNX INT8 artifact of ``export_dir``; write ``<artifact>-repaired`` beside it.

    ``calibration`` is normalised (:func:`calibration_from_config`, :func:`normalise_inputs`);
    ``target_predicted`` the classes the target predicted on the eval set (its flips seed the
    first round). The new folder carries a manifest like the others, listing the nodes kept in
    float and why, and is added to ``export.json``, so validation and the registry treat it as
    any other artifact. When the graph already meets the gate nothing is written.
    """
    export_dir = Path(export_dir)
    manifests = read_export(export_dir)
    if artifact not in manifests:
        raise RepairError(f"{export_dir} has no artifact {artifact!r}; it has {sorted(manifests)}")
    manifest = manifests[artifact]
    if manifest.format != "onnx" or manifest.precision != "int8":
        raise RepairError(
            f"{artifact} is {manifest.format} {manifest.precision}: int8-debug repairs ONNX INT8 "
            "artifacts (OpenVINO's accuracy-controlled NNCF mode keeps layers in FP itself)"
        )
    recipe = recipe_of(manifest)
    fp32 = fp32_sibling(manifests, artifact)
    images, labels, reference = read_eval(export_dir, manifest.branch)
    seed = np.zeros(0, dtype=np.int64)
    if target_predicted is not None:
        seed = flipped_indices(reference, target_predicted)
    with tempfile.TemporaryDirectory(prefix="onedge-int8-repair-") as tmp:
        graph, rounds = repair_graph(
            export_dir / fp32 / manifests[fp32].model_file,
            export_dir / artifact / manifest.model_file,
            calibration, recipe, contract_of(manifest), images, reference, seed,
            gate, max_nodes, Path(tmp),
        )  # fmt: skip
        before = rounds[0].agreement
        if target_predicted is not None:
            before = agreement(reference, target_predicted)
        outcome = RepairOutcome(
            artifact=artifact,
            gate=gate,
            max_nodes=max_nodes,
            agreement_before=before,
            agreement_after=rounds[-1].agreement,
            met_gate=rounds[-1].agreement >= gate,
            in_float=_why(rounds),
            rounds=rounds,
            recipe=recipe[0].name,
            calibration=f"{calibration_source} ({len(calibration)} images)",
        )
        if not outcome.in_float:
            return outcome
        outcome.repaired = artifact + REPAIRED_SUFFIX
        _write_repaired(export_dir, manifest, graph, outcome, (images, labels, reference))
    return outcome


def _why(rounds: list[RepairRound]) -> list[dict[str, Any]]:
    """Each node kept in float, with the round that chose it and what it cost there."""
    kept = []
    for index, chosen in enumerate(rounds[1:]):
        node, ranking = chosen.in_float[-1], rounds[index].ranking
        rank = next(i for i, n in enumerate(ranking) if n.node == node)
        loss = ranking[rank]
        kept.append({
            "node": node,
            "op_type": loss.op_type,
            "why": f"round {index + 1}: ranked {rank + 1} by SQNR lost on the "
            f"{rounds[index].flipped} flipped images ({loss.loss_db:.1f} dB from its inputs to "
            f"its output, output SQNR {loss.output_sqnr_db:.1f} dB); of the top ranked, the one "
            f"whose float version agreed most: agreement {rounds[index].agreement:.2%} -> "
            f"{chosen.agreement:.2%}",
        })  # fmt: skip
    return kept


def _write_repaired(
    export_dir: Path,
    manifest: Manifest,
    graph: Path,
    outcome: RepairOutcome,
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Path:
    """The repaired artifact folder, its manifest and its entry in ``export.json``."""
    images, labels, reference = evaluation
    folder = export_dir / str(outcome.repaired)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    shutil.copyfile(graph, folder / manifest.model_file)
    logits = run_onnx(ort_session(folder / manifest.model_file), images)
    test = {
        "images": len(images),
        "top1": float(np.mean(np.argmax(logits, axis=1) == labels)),
        "top1_agreement": agreement(reference, np.argmax(logits, axis=1)),
        "max_abs_diff": float(np.max(np.abs(logits - reference))),
    }
    extra = {
        **manifest.extra,
        "test": test,
        "int8_repair": {
            "repaired_from": {"artifact": outcome.artifact, "sha256": manifest.sha256},
            "nodes_in_float": outcome.in_float,
            "gate": outcome.gate,
            "agreement_before": outcome.agreement_before,
            "agreement_after": outcome.agreement_after,
            "met_gate": outcome.met_gate,
            "recipe": outcome.recipe,
            "calibration": outcome.calibration,
        },
    }
    fields = manifest.model_dump(exclude={"files", "sha256", "model_file", "created", "extra"})
    fields["name"] = f"{manifest.name}{REPAIRED_SUFFIX}"
    built = build_manifest(
        folder, [manifest.model_file], manifest.model_file, **fields, extra=extra
    )
    write_manifest(folder, built)
    verify_artifact(folder)
    _add_to_export_json(export_dir, folder, built, test)
    return folder


def _add_to_export_json(export_dir: Path, folder: Path, manifest: Manifest, test: dict) -> None:
    path = export_dir / EXPORT_JSON
    document = json.loads(path.read_text())
    record = {
        "name": folder.name,
        "format": manifest.format,
        "precision": manifest.precision,
        "folder": folder.name,
        "sha256": manifest.sha256,
        "model_file": manifest.model_file,
        "evaluated_with": "onnxruntime-cpu",
        "parity": {},
        "test": test,
        "extra": {"int8_repair": manifest.extra["int8_repair"]},
    }
    kept = [a for a in document.get("artifacts", []) if a.get("folder") != folder.name]
    document["artifacts"] = [*kept, record]
    atomic_write(path, json.dumps(document, indent=2, default=str))
