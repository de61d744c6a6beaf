"""Full export (ONNX and OpenVINO; FP32, FP16, INT8 with ORT and NNCF) of trained timm students.

Two representative timm networks take the whole chain here: mobilenetv3_small_100 (hard-swish,
squeeze-excitation) and regnetx_002 (plain ReLU); the first one's INT8 graphs fail the
exporter's agreement check at this training level (INT8_AT_RISK), and the test says so. Every listed timm network takes the ONNX export
and the extraction checks in tests/training/test_models.py; this keeps the suite's cost small.
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
from training.models.timm_family import timm_reference

pytestmark = pytest.mark.slow
REPRESENTATIVES = ["mobilenetv3_small_100", "regnetx_002"]
FAST_ORT = {"candidates": "qdq-s8s8-pre", "timing_seconds": 0.1}
# hard-swish + squeeze-excitation: after one epoch on 8x8 digits its INT8 graphs agree with
# PyTorch on 62-70% of labels (ORT / NNCF), below the exporter's 95%, and are refused; measured
INT8_AT_RISK = {"mobilenetv3_small_100"}
EXPECTED = {f"{fmt}-{p}" for fmt in ("onnx", "openvino") for p in ("fp32", "fp16", "int8")}


@pytest.mark.parametrize("architecture", REPRESENTATIVES)
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
            "train.lr": 0.01,  # from timm's fresh init at 0.1, logits reach ~1e4 after one epoch
            "method.rampup_epochs": 1,
            "data.calibration_size": 64,
        }
    ).training_config()
    train(config, tmp_path / "run")
    result = export_checkpoint(
        tmp_path / "run" / "checkpoint.pt",
        tmp_path / "export",
        ExportConfig(
            formats=["onnx", "openvino"], ort_int8=FAST_ORT, calibration_size=64, threads=1
        ),
    )
    names = {record.name for record in result.artifacts}
    failed = {f["name"]: f for f in json.loads(result.export_json.read_text()).get("failed", [])}
    assert names >= {n for n in EXPECTED if not n.endswith("int8")}, (names, failed)
    for name in sorted(n for n in EXPECTED if n.endswith("int8")):
        if architecture in INT8_AT_RISK and name not in names:  # refused by the parity check
            assert failed[name]["error"] == "ParityError", failed[name]
            print(name, failed[name]["reason"])
        else:
            assert name in names, (name, failed)
    for record in result.artifacts:
        manifest = verify_artifact(record.folder)
        assert manifest.init_sha256 == sha256_file(weights)  # what the student started from
        print(record.name, record.test)  # the export failed loudly on a parity beyond tolerance
