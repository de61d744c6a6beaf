"""INT8 repair on a graph spoiled on purpose: calibrated on blank images.

The network is the small CNN of the targets tests (two convolutions and a linear layer) trained
on scikit-learn's digits, so its FP32 logits do not tie; its ONNX Runtime Q/DQ INT8 graph,
calibrated on blank images, clips nearly every activation and agrees with FP32 on a fraction of
the images. The repair, given the same blank calibration set, must find the nodes by name in the
graph, keep them in float and meet the gate; the repaired artifact validates like any other.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.int8_artifact import repair_artifact
from export.int8_repair import REPAIRED_SUFFIX, RepairError
from export.manifest import InputSpec, OutputSpec, build_manifest, read_export, write_manifest
from export.quantize import parse_ort_candidate, quantize_onnx_cpu
from pipeline.cli import main
from pipeline.int8_debug import repair_below_gate, repair_lines
from targets import LocalCpuTarget, ValidationSettings, validate_artifacts
from targets.gates import GatePolicy
from tests.targets.digits_artifacts import digits_split, small_cnn, train, write_export_index

GATE = 0.97
RECIPE = "qdq-s8s8"


@pytest.fixture
def fast() -> ValidationSettings:
    return ValidationSettings(
        warmup_seconds=0.05, warmup_calls=5, timed_seconds=0.1, timed_calls=20,
        throughput_calls=2, batch_size=16, threads=1,
    )  # fmt: skip


def _manifest(folder: Path, precision: str, mean: float, std: float, extra: dict) -> None:
    manifest = build_manifest(
        folder, ["model.onnx"], "model.onnx",
        name=f"digits-cnn-onnx-{precision}", format="onnx", precision=precision,
        input=InputSpec(shape=[-1, 1, 8, 8], mean=[mean], std=[std], scale=16.0),
        output=OutputSpec(shape=[-1, 10]), class_names=[str(d) for d in range(10)],
        source_checkpoint_sha256="0" * 64, branch=0, extra=extra,
    )  # fmt: skip
    write_manifest(folder, manifest)


@pytest.fixture(scope="module")
def spoiled(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """An export folder with onnx-fp32 and a spoiled onnx-int8, and the blank calibration set."""
    root = tmp_path_factory.mktemp("spoiled-export")
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test, mean, std = digits_split()
    model = small_cnn()
    train(model, x_train, y_train)
    with torch.no_grad():
        reference = model(torch.from_numpy(x_test)).numpy()
    np.savez(root / "eval.npz", images=x_test, labels=y_test, reference_logits=reference)
    (root / "onnx-fp32").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, torch.zeros(1, 1, 8, 8), root / "onnx-fp32" / "model.onnx",
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    _manifest(root / "onnx-fp32", "fp32", mean, std, {})
    blank = np.full((64, 1, 8, 8), (0.0 - mean) / std, dtype=np.float32)  # blank raw images
    (root / "onnx-int8").mkdir()
    quantize_onnx_cpu(
        root / "onnx-fp32" / "model.onnx", root / "onnx-int8" / "model.onnx", blank,
        parse_ort_candidate(RECIPE),
    )  # fmt: skip
    search = {"ort_int8_search": {"chosen": RECIPE, "per_channel": True}}
    _manifest(root / "onnx-int8", "int8", mean, std, search)
    write_export_index(root)
    return root, blank


def test_repair_keeps_named_nodes_in_float_and_meets_the_gate(spoiled, tmp_path, fast) -> None:
    root, blank = spoiled
    policy = GatePolicy(min_agreement=GATE)
    before = validate_artifacts(
        root / "onnx-int8", "local-cpu", tmp_path / "before", fast, policy, root / "eval.npz"
    )
    spoilt = before.result("onnx-int8")
    assert spoilt.agreement < GATE and spoilt.verdict == "fail"

    outcome = repair_artifact(
        root, "onnx-int8", blank, GATE, target_predicted=spoilt.predicted_classes()
    )
    assert outcome.agreement_before == pytest.approx(spoilt.agreement)
    assert outcome.met_gate and outcome.agreement_after >= GATE
    kept = [entry["node"] for entry in outcome.in_float]
    fp32_nodes = {
        n.name: n.op_type for n in onnx.load(root / "onnx-fp32" / "model.onnx").graph.node
    }
    int8_graph = onnx.load(root / "onnx-int8" / "model.onnx").graph
    assert kept and len(set(kept)) == len(kept) <= 3
    for entry in outcome.in_float:  # real node names, of the op the graph gives them
        assert fp32_nodes[entry["node"]] == entry["op_type"] in ("Conv", "Gemm", "MatMul")
        assert entry["node"] in {n.name for n in int8_graph.node} and "flipped" in entry["why"]

    repaired = outcome.repaired
    assert repaired == "onnx-int8" + REPAIRED_SUFFIX
    manifests = read_export(root)  # listed in export.json, every hash checked
    record = manifests[repaired].extra["int8_repair"]
    assert [n["node"] for n in record["nodes_in_float"]] == kept
    assert record["repaired_from"]["sha256"] == manifests["onnx-int8"].sha256
    repaired_graph = onnx.load(root / repaired / "model.onnx").graph
    float_weights = {i.name for i in repaired_graph.initializer if i.data_type == 1}
    for node in repaired_graph.node:  # those nodes compute with their float weights now
        if node.name in kept:
            assert node.input[1] in float_weights
    after = validate_artifacts(
        root / repaired, "local-cpu", tmp_path / "after", fast, policy, root / "eval.npz"
    )
    result = after.result(repaired)
    assert result.agreement >= GATE and result.verdict == "pass"
    document = json.loads((root / "export.json").read_text())
    assert document["artifacts"][-1]["folder"] == repaired
    (line,) = repair_lines(document)  # the report's INT8 repair section
    assert line.startswith(f"{repaired} (from onnx-int8)") and f"`{kept[0]}`" in line


def test_validation_hook_repairs_below_the_gate_and_adds_the_result(spoiled, tmp_path, fast):
    root, blank = spoiled
    policy = GatePolicy(min_agreement=GATE)
    target = LocalCpuTarget()
    report = validate_artifacts(
        root / "onnx-int8", target, tmp_path / "v", fast, policy, root / "eval.npz"
    )
    np.savez(tmp_path / "blank.npz", images=blank)
    found = repair_below_gate(root, target, report, tmp_path / "dbg", 8, fast, policy,
                              calibration=tmp_path / "blank.npz")  # fmt: skip
    assert [f.artifact for f in found] == ["onnx-int8"] and found[0].outcome.met_gate
    added = report.result("onnx-int8" + REPAIRED_SUFFIX)
    assert added.verdict == "pass" and added.agreement >= GATE
    assert report.result("onnx-int8").verdict == "fail" and not report.passed


def test_int8_debug_command_on_an_artifact_that_meets_the_gate(spoiled, tmp_path, capsys):
    root, blank = spoiled
    if not (root / ("onnx-int8" + REPAIRED_SUFFIX)).is_dir():
        np.savez(tmp_path / "blank.npz", images=blank)
        repair_artifact(root, "onnx-int8", blank, GATE)
    sets = ["validate.gates.min_agreement=0.97", "validate.settings.timed_seconds=0.1",
            "validate.settings.warmup_seconds=0.05", "validate.settings.threads=1"]  # fmt: skip
    argv = ["int8-debug", "--artifacts", str(root), "--target", "local-cpu",
            "--artifact", "onnx-int8" + REPAIRED_SUFFIX, "--out", str(tmp_path / "debug"),
            "--set", *sets]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(gate 97.00%)" in out and "meets the gate: nothing to repair" in out
    assert (tmp_path / "debug" / "before" / "report.json").is_file()


def test_int8_debug_refuses_what_it_cannot_repair(spoiled, tmp_path, capsys) -> None:
    root, _ = spoiled
    with pytest.raises(RepairError, match="ONNX INT8"):
        repair_artifact(root, "onnx-fp32", np.zeros((1, 1, 8, 8), np.float32), GATE)
    argv = ["int8-debug", "--artifacts", str(root), "--target", "local-cpu",
            "--artifact", "absent", "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(argv) == 2
    assert "no artifact 'absent'" in capsys.readouterr().err
