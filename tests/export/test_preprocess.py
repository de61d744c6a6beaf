"""Preprocessing inside the artifacts: raw images in, the PyTorch student's logits out."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export.config import ExportConfig
from export.exporter import export_checkpoint
from export.manifest import read_manifest
from export.onnx import ort_session, run_onnx
from export.openvino import compile_openvino, run_openvino, save_openvino
from export.preprocess import InputContract, Preprocessed, embed_onnx, embed_openvino
from tests.export.conftest import CHW
from training.data import DatasetSpec


def contract(layout: str) -> InputContract:
    spec = DatasetSpec("toy", 10, tuple("abcdefghij"), 1, CHW[1], (0.31,), (0.37,), 16.0, "none")
    return InputContract.for_spec(spec, True, layout, "uint8")


@pytest.fixture(scope="module")
def raw_images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 17, (64, *CHW), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_embedded_graphs_equal_the_student_on_raw_images(
    layout, cnn, cnn_onnx, raw_images, tmp_path
):
    c = contract(layout)
    raw = c.arrange(raw_images)
    with torch.inference_mode():
        reference = cnn(torch.from_numpy(c.normalise(raw))).numpy()
        wrapped = Preprocessed(cnn, c)(torch.from_numpy(raw)).numpy()
    assert np.abs(wrapped - reference).max() <= 1e-5
    onnx_path = embed_onnx(Path(shutil.copy(cnn_onnx, tmp_path / "model.onnx")), c)
    session = ort_session(onnx_path)
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert session.get_inputs()[0].shape[1:] == list(raw.shape[1:])
    assert np.abs(run_onnx(session, raw) - reference).max() <= 1e-4
    import openvino as ov

    xml = tmp_path / "model.xml"
    save_openvino(ov.Core().read_model(str(cnn_onnx)), xml, compress_to_fp16=False)
    embed_openvino(xml, c, compress_to_fp16=False)
    compiled = compile_openvino(xml, exact_f32=True)
    assert compiled.input(0).get_element_type() == ov.Type.u8
    assert list(compiled.input(0).get_partial_shape())[1:] == list(raw.shape[1:])
    assert np.abs(run_openvino(compiled, raw) - reference).max() <= 1e-4
    with pytest.raises(Exception, match="embedded"):  # twice would normalise twice
        embed_onnx(onnx_path, c)


def test_nhwc_export_of_the_digits_student(digits_checkpoint, tmp_path):
    """Raw NHWC uint8 in, FP32 within 1e-4 of PyTorch, INT8 (body quantised) still works."""
    settings = ExportConfig(
        formats="onnx,openvino",
        precisions="fp32,int8",
        input_layout="NHWC",
        calibration_size=128,
        ort_int8={"candidates": "qdq-s8s8-pre", "timing_seconds": 0.1},
        threads=2,
    )
    result = export_checkpoint(digits_checkpoint, tmp_path, settings)
    data = np.load(result.eval_file)
    images, reference = data["images"], data["reference_logits"]
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    for name in ("onnx-fp32", "openvino-fp32", "onnx-int8", "openvino-int8", "torch-fp32"):
        manifest = read_manifest(tmp_path / name)
        assert manifest.input.shape == [-1, 8, 8, 1] and manifest.input.dtype == "uint8"
        assert manifest.input.layout == "NHWC" and manifest.input.preprocessing == "embedded"
        assert manifest.input.value_range == [0.0, 16.0] and manifest.input.scale == 16.0
    onnx_logits = run_onnx(ort_session(tmp_path / "onnx-fp32" / "model.onnx"), images)
    ov_logits = run_openvino(compile_openvino(tmp_path / "openvino-fp32" / "model.xml"), images)
    for logits in (onnx_logits, ov_logits):
        assert np.abs(logits - reference).max() <= 1e-4
    for name in ("onnx-int8", "openvino-int8"):
        assert result.artifact(name).test["top1_drop_vs_torch_fp32"] <= 0.02
    from export.extract import load_student

    with torch.inference_mode():
        torch_logits = load_student(tmp_path / "torch-fp32")(torch.from_numpy(images)).numpy()
    assert np.abs(torch_logits - reference).max() <= 1e-5


def test_without_embedding_the_input_stays_the_normalised_tensor(digits_checkpoint, tmp_path):
    settings = ExportConfig(formats="onnx", precisions="fp32", embed_preprocessing=False)
    result = export_checkpoint(digits_checkpoint, tmp_path, settings)
    images = np.load(result.eval_file)["images"]
    assert images.dtype == np.float32 and images.min() < 0  # normalised
    manifest = read_manifest(tmp_path / "onnx-fp32")
    assert manifest.input.preprocessing == "external" and manifest.input.dtype == "float32"
    assert ort_session(tmp_path / "onnx-fp32" / "model.onnx").get_inputs()[0].type == (
        "tensor(float)"
    )


def test_nhwc_without_embedding_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="NHWC needs embed_preprocessing"):
        ExportConfig(input_layout="NHWC", embed_preprocessing=False)
