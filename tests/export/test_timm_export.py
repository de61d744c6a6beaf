"""Full export (ONNX and OpenVINO; FP32, FP16, INT8 with ORT and NNCF) of every listed timm student.

Parametrised over :data:`training.models.timm_family.TIMM_ARCHITECTURES`, so a newly listed
architecture gets these checks for free. Each student is a 2-branch ONE network started from a
saved timm state dict (its sha256 must reach every manifest) and trained briefly on digits (one
epoch over 256 images at 8x8: the BatchNorm statistics and weights move off their init), then
exported; every artifact must pass the exporter's parity gates on the calibration images, and
every manifest must verify. The shape is kept small (256 training images, 128 calibration and
128 test images, one ONNX Runtime variant and candidate, no static batch-1 copies: those are
checked in tests/export/test_export_checkpoint.py, and opset 17, the TorchScript exporter,
about 0.4 s a network where the default opset 18's torch.export-based one takes about 7 s; every
listed network takes that default path in tests/training/test_models.py's ONNX export check).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from export.config import ExportConfig
from export.exporter import export_checkpoint
from export.manifest import verify_artifact
from onedge.files import sha256_file
from tests.conftest import quick_config
from training.models.timm_family import TIMM_ARCHITECTURES, timm_reference

pytestmark = pytest.mark.slow
FAST_ORT = {"variants": ["default"], "candidates": "qdq-s8s8-pre", "timing_seconds": 0.05}
# Architectures whose INT8 graphs may be refused by the exporter's 95% agreement gate at this
# training level (either outcome is accepted, the refusal must be a ParityError); every other
# one must export INT8. Measured 2026-12-02 (AMD EPYC, AVX-512 VNNI), calibration agreement of
# onnx-int8 / openvino-int8 with PyTorch: see the values beside each name. An architecture is
# listed when either value was below 99%, so an AVX2-only CPU's larger INT8 error
# (docs/INT8_VARIANTS.md) does not turn a pass here into a failure there.
INT8_AT_RISK = {
    "mobilenetv3_large_100": "onnx-int8 79.69%, openvino-int8 76.56% (both refused)",
    "resnet18d": "onnx-int8 96.09% (OpenVINO refuses the graph at 8 px, below)",
}  # mobilenetv3_small_100, efficientnet_lite0, efficientnet_b0: 100% and 100%; regnetx_002: 99.22%
# At 8x8 (digits) the small-input rule leaves resnet18d's last stage a 1x1 map, and its ResNet-D
# shortcut's AvgPool2d(2, ceil_mode=True) then has a kernel larger than the map: PyTorch and ONNX
# Runtime accept it, OpenVINO 2026.4's ONNX reader refuses the graph. At 28x28 it exports
# (bench/timm_int8.py runs it through OpenVINO FP32 and INT8).
OPENVINO_REFUSES_AT_8PX = {"resnet18d": "OpenVINO cannot read"}
EXPECTED = {f"{fmt}-{p}" for fmt in ("onnx", "openvino") for p in ("fp32", "fp16", "int8")}


@pytest.mark.parametrize("architecture", TIMM_ARCHITECTURES)
def test_timm_student_exports_to_every_format(architecture: str, tmp_path: Path) -> None:
    from training.trainer import train

    torch.manual_seed(0)
    weights = tmp_path / "init.pth"
    torch.save(timm_reference(architecture, 1000, 3, 224).state_dict(), weights)
    config = quick_config(
        **{
            "model.name": f"timm/{architecture}",
            "model.init": str(weights),
            "model.branches": 2,
            "train.epochs": 1,
            "train.lr": 0.01,  # from timm's fresh init at 0.1 logits reach ~1e4 in an epoch
            "method.rampup_epochs": 1,
            "data.limit_train": 256,
            "data.calibration_size": 128,
        }
    ).training_config()
    train(config, tmp_path / "run")
    result = export_checkpoint(
        tmp_path / "run" / "checkpoint.pt",
        tmp_path / "export",
        ExportConfig(
            formats=["onnx", "openvino"],
            ort_int8=FAST_ORT,
            static_batch1=[],
            calibration_size=128,
            eval_limit=128,
            threads=1,
            # mobilenetv3_large_100's FP16 graphs agree on 127 of 128 images (99.22%): one
            # more image would cross the default 99% on another CPU; 98% still refuses a broken one
            tolerances={"fp16_min_agreement": 0.98},
            opset=17,  # TorchScript exporter: 0.4 s, not 7 s (the dynamo path: see the docstring)
        ),
    )
    names = {record.name for record in result.artifacts}
    failed = {f["name"]: f for f in json.loads(result.export_json.read_text()).get("failed", [])}
    reasons = {name: f["reason"] for name, f in failed.items()}
    expected = set(EXPECTED)
    if architecture in OPENVINO_REFUSES_AT_8PX:
        for name in sorted(n for n in EXPECTED if n.startswith("openvino")):
            assert OPENVINO_REFUSES_AT_8PX[architecture] in reasons[name], reasons
        expected = {n for n in EXPECTED if not n.startswith("openvino")}
    assert names >= {n for n in expected if not n.endswith("int8")}, reasons
    for name in sorted(n for n in expected if n.endswith("int8")):
        if architecture in INT8_AT_RISK and name not in names:  # refused by the parity check
            assert failed[name]["error"] == "ParityError", failed[name]
            print(architecture, name, failed[name]["reason"])
        else:
            assert name in names, reasons
    for record in result.artifacts:
        manifest = verify_artifact(record.folder)
        assert manifest.init_sha256 == sha256_file(weights)  # what the student started from
        parity = manifest.extra["parity"]
        print(architecture, record.name, f"calibration agreement {parity['top1_agreement']:.2%}")
