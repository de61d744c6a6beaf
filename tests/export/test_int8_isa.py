"""ONNX Runtime INT8 variants across instruction sets: today's recipe and its reduce-range twin.

The student is a trained digits CNN with batch norm (three conv-BN-ReLU blocks, average pool,
linear: a CIFAR-ResNet's layer types in miniature; 98.0% test top-1), quantised with today's
recipe ``qdq-u8s8`` (``onnx-int8``) and the same recipe with 7-bit weights ``qdq-u8s8-rr``
(``onnx-int8-rr``). Both are validated by the runner on this CPU and on an emulated AVX2 CPU
(``qemu-x86_64 -cpu Haswell``: no AVX-512, no VNNI), where ONNX Runtime picks its AVX2 kernels.
Measured on the AVX-512 VNNI EPYC: agreement with FP32 on the 400 held-out images 99.75%
(onnx-int8) and 100% (onnx-int8-rr); under Haswell 95.0% (top-1 down 3.25 points, max logit
error 5.2 against 0.16) and 100%. Over 14 initial seeds, under Haswell today's recipe agreed
95.0-99.75% (max logit error 1.6-5.2) and reduce-range 99.5-100% (0.16-1.45); seed 7 is the
one whose saturation crosses the gate.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from export.manifest import InputSpec, OutputSpec, build_manifest, write_manifest
from export.quantize import ORT_INT8_VARIANTS, parse_ort_candidate, quantize_onnx_cpu
from pipeline.model_registry.per_target import choose_for_target
from targets.base import ValidationSettings
from targets.gates import GatePolicy, TargetBudget
from targets.local import LocalCpuTarget
from targets.validate import validate_artifacts
from tests.isa import accumulates_wide
from tests.targets.digits_artifacts import digits_split, train, write_export_index

GATE = 0.97  # the digits config's min_agreement
RECIPES = {"onnx-int8": "qdq-u8s8", "onnx-int8-rr": "qdq-u8s8-rr"}
BOARDS = Path(__file__).parents[1] / "targets" / "data" / "boards"
QEMU = shutil.which("qemu-x86_64")
FAST = ValidationSettings(
    warmup_seconds=0.0, warmup_calls=1, timed_seconds=0.0, timed_calls=5, throughput_calls=1,
    batch_size=50, threads=1, command_timeout_s=300, retries=0,
)  # fmt: skip


def bn_student(seed: int = 7) -> nn.Module:
    """Its initial weights from ``seed``; trained by ``digits_artifacts.train`` (seeded too)."""
    torch.manual_seed(seed)

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16, 1), *block(16, 32, 2), *block(32, 32, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def onnx_facts(path: Path) -> dict[str, int]:
    """What the export records of a graph (ONNX IR version, opset), for the runner's check."""
    model = onnx.load(str(path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"ir_version": model.ir_version, "opset": opset}


def write_onnx_artifact(folder: Path, precision: str, mean: float, std: float, extra: dict):
    manifest = build_manifest(
        folder, ["model.onnx"], "model.onnx", name=folder.name, format="onnx",
        precision=precision, input=InputSpec(shape=[-1, 1, 8, 8], mean=[mean], std=[std]),
        output=OutputSpec(shape=[-1, 10]), class_names=[str(d) for d in range(10)],
        source_checkpoint_sha256="0" * 64, branch=0,
        extra={**extra, "onnx": onnx_facts(folder / "model.onnx")},
    )  # fmt: skip
    write_manifest(folder, manifest)


@pytest.fixture(scope="module")
def isa_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """onnx-fp32, onnx-int8 (qdq-u8s8) and onnx-int8-rr (qdq-u8s8-rr) of the trained student."""
    root = tmp_path_factory.mktemp("isa-export")
    x_train, y_train, x_test, y_test, mean, std = digits_split()
    model = bn_student()
    train(model, x_train, y_train, epochs=6)
    with torch.no_grad():
        reference = model(torch.from_numpy(x_test)).numpy()
    np.savez(root / "eval.npz", images=x_test, labels=y_test, reference_logits=reference)
    fp32 = root / "onnx-fp32"
    fp32.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, torch.zeros(1, 1, 8, 8), fp32 / "model.onnx", input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}},
            dynamo=False,
        )  # fmt: skip
    write_onnx_artifact(fp32, "fp32", mean, std, {})
    for name, recipe in RECIPES.items():
        folder = root / name
        folder.mkdir()
        candidate = parse_ort_candidate(recipe)
        quantize_onnx_cpu(fp32 / "model.onnx", folder / "model.onnx", x_train[:256], candidate)
        variant = "reduce-range" if candidate.reduce_range else "default"
        info = {"variant": variant, "recipe": recipe, **ORT_INT8_VARIANTS[variant]}
        write_onnx_artifact(folder, "int8", mean, std, {"int8_recipe": info})
    write_export_index(root)
    return root


def validate(root: Path, target, out: Path):
    policy = GatePolicy(min_agreement=GATE, max_top1_drop=0.01)
    return validate_artifacts(root, target, out, FAST, policy)


def test_reduce_range_holds_here_and_today_s_recipe_where_products_accumulate_wide(
    isa_export: Path, tmp_path: Path
) -> None:
    report = validate(isa_export, "local-cpu", tmp_path)
    rr, today = report.result("onnx-int8-rr"), report.result("onnx-int8")
    assert rr.agreement >= GATE and rr.verdict == "pass"  # every x86 CPU
    if accumulates_wide(report.target_info.isa):  # VNNI / AMX: no 16-bit saturation
        assert today.agreement >= GATE and today.verdict == "pass"
    else:  # AVX2 and older: today's recipe saturates (see the emulated test)
        assert today.agreement < rr.agreement
    assert rr.isa == report.target_info.isa


def haswell_python(folder: Path) -> str:
    """A ``python`` that runs this interpreter on an emulated Haswell (AVX2, no AVX-512)."""
    import sys

    wrapper = folder / "python-haswell"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export ONEDGE_CPUINFO='{BOARDS / 'haswell.cpuinfo'}'\n"
        "export ONEDGE_EMULATED='qemu-x86_64 -cpu Haswell'\n"
        f"exec '{QEMU}' -cpu Haswell '{sys.executable}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-user is absent (apt-get install qemu-user)")
def test_on_an_emulated_avx2_cpu_only_reduce_range_holds_and_is_picked(
    isa_export: Path, tmp_path: Path
) -> None:
    target = LocalCpuTarget(python=haswell_python(tmp_path), name="haswell")
    report = validate(isa_export, target, tmp_path / "out")
    info = report.target_info
    assert (info.isa, info.cpu_features, info.emulated) == (
        "x86_64 avx2",
        ["avx2"],
        "qemu-x86_64 -cpu Haswell",
    )
    today, rr = report.result("onnx-int8"), report.result("onnx-int8-rr")
    assert today.agreement < GATE and today.verdict == "fail"  # 16-bit saturation
    assert any("agreement" in reason for reason in today.reasons)
    assert rr.agreement >= GATE and rr.verdict == "pass"
    assert rr.isa == "x86_64 avx2"
    choice = choose_for_target(report, TargetBudget())
    assert choice.pick != "onnx-int8" and choice.pick is not None
    assert "agreement" in choice.excluded["onnx-int8"][0]  # the reason it was left out
    assert report.result(choice.pick).agreement >= GATE
    figures = {r.artifact: r.agreement for r in report.results}
    (tmp_path / "haswell-agreement.json").write_text(json.dumps(figures))
