"""Exporting a family of students: one set of folders per student, each checked on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from export.config import ExportConfig
from export.exporter import export_checkpoint, student_prefix
from export.manifest import verify_artifact
from export.onnx import ort_session, run_onnx
from onedge.errors import ConfigError
from targets.runner import reference_key

ONNX_FP32 = {"formats": "onnx", "precisions": "fp32", "threads": 1}


def test_student_prefix_names_branch_and_width() -> None:
    assert student_prefix(2, 0.6) == "s2-w0.6-"
    assert student_prefix(0, 1.0) == "s0-w1.0-"
    assert student_prefix(1, 2 / 3) == "s1-w0.67-"


def test_every_student_gets_its_folders_and_manifests(
    tmp_path: Path, digits_students_checkpoint: Path
) -> None:
    result = export_checkpoint(
        digits_students_checkpoint, tmp_path, ExportConfig(branches="all", **ONNX_FP32)
    )
    names = [r.name for r in result.artifacts]
    assert names == ["s0-w1.0-onnx-fp32", "s1-w0.5-onnx-fp32", "s2-w0.25-onnx-fp32"]
    data = np.load(result.eval_file)
    assert "reference_logits" not in data.files  # no reference that belongs to no student
    macs = []
    for k, name in enumerate(names):
        manifest = verify_artifact(tmp_path / name)
        assert manifest.branch == k and manifest.width == [1.0, 0.5, 0.25][k]
        student = manifest.extra["student"]
        assert student["branch"] == k and student["parameters"] > 0
        macs.append(student["macs"])
        torch_manifest = verify_artifact(tmp_path / name.replace("onnx-fp32", "torch-fp32"))
        assert torch_manifest.branch == k
        # each artifact is its own student: logits equal that branch's reference
        logits = run_onnx(ort_session(tmp_path / name / "model.onnx"), data["images"])
        assert reference_key(data, k) == f"reference_logits_b{k}"
        assert np.abs(logits - data[f"reference_logits_b{k}"]).max() <= 1e-4
    assert macs[0] > macs[1] > macs[2]
    document = json.loads(result.export_json.read_text())
    assert [s["branch"] for s in document["students"]] == [0, 1, 2]
    assert [s["width"] for s in document["students"]] == [1.0, 0.5, 0.25]
    assert document["torch_fp32"]["folder"].endswith("torch-fp32")

    # a subset, then deployed: earlier folders are cleared, deployed keeps the plain names
    subset = export_checkpoint(
        digits_students_checkpoint, tmp_path, ExportConfig(branches="0,2", **ONNX_FP32)
    )
    assert [r.name for r in subset.artifacts] == ["s0-w1.0-onnx-fp32", "s2-w0.25-onnx-fp32"]
    assert not (tmp_path / "s1-w0.5-onnx-fp32").exists()
    one = export_checkpoint(digits_students_checkpoint, tmp_path, ExportConfig(**ONNX_FP32))
    assert [r.name for r in one.artifacts] == ["onnx-fp32"]
    data = np.load(one.eval_file)
    deployed = one.student["branch"]
    assert reference_key(data, deployed) == f"reference_logits_b{deployed}"
    assert np.array_equal(data["reference_logits"], data[f"reference_logits_b{deployed}"])


def test_bad_branch_selections(tmp_path: Path, digits_students_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"names \[5\].*0\.\.2"):
        export_checkpoint(
            digits_students_checkpoint, tmp_path, ExportConfig(branches="0,5", **ONNX_FP32)
        )
    with pytest.raises(ValidationError, match="either branch"):
        ExportConfig(branch=1, branches="all")
    with pytest.raises(ValidationError):
        ExportConfig(branches="-1")


def test_reference_key_never_lends_another_students_reference() -> None:
    assert reference_key({"reference_logits": 1}, 3) == "reference_logits"
    assert reference_key({"reference_logits_b0": 1, "reference_logits_b2": 1}, 1) is None
