"""ONNX Runtime INT8 recipe search, FP16 ONNX, and OpenVINO INT8 through NNCF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from export.errors import ExportError
from export.onnx import ort_session, run_onnx, torch_logits
from export.openvino import compile_openvino, read_onnx_as_openvino, run_openvino
from export.quantize import (
    choose_ort_int8,
    onnx_to_fp16,
    parse_ort_candidate,
    quantize_openvino,
)


@pytest.mark.parametrize(
    ("name", "fmt", "act", "weight", "pre"),
    [
        ("qdq-u8s8", "qdq", "u8", "s8", False),
        ("QOperator-S8S8-pre", "qoperator", "s8", "s8", True),
    ],
)
def test_candidate_names(name: str, fmt: str, act: str, weight: str, pre: bool) -> None:
    candidate = parse_ort_candidate(name)
    assert (candidate.quant_format, candidate.activations, candidate.weights) == (fmt, act, weight)
    assert candidate.preprocess is pre


@pytest.mark.parametrize("name", ["qdq", "qdq-u8", "int8-u8s8", "qdq-u8s8-fast", "qdq-x8s8"])
def test_bad_candidate_names(name: str) -> None:
    with pytest.raises(ExportError, match="candidate"):
        parse_ort_candidate(name)


def test_ort_int8_search_records_and_keeps_the_fastest(
    cnn, cnn_onnx: Path, tmp_path: Path, images: np.ndarray
) -> None:
    labels = torch_logits(cnn, images).argmax(1)  # the FP32 model's own answers as labels
    record = choose_ort_int8(
        cnn_onnx,
        tmp_path / "int8.onnx",
        images[:64],
        (images, labels),
        ["qdq-u8s8", "qoperator-u8s8-pre"],
        timing_seconds=0.2,
        accuracy_slack=1.0,  # every candidate counts as equal: the fastest must win
        threads=1,
    )
    rows = {row["candidate"]: row for row in record["measurements"]}
    assert set(rows) == {"fp32", "qdq-u8s8", "qoperator-u8s8-pre"}
    assert all(row["p50_ms"] > 0 and 0 <= row["val_top1"] <= 1 for row in rows.values())
    fastest = min(("qdq-u8s8", "qoperator-u8s8-pre"), key=lambda n: rows[n]["p50_ms"])
    assert record["chosen"] == fastest
    assert rows["fp32"]["ratio_to_fp32"] == pytest.approx(1.0)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert ops & {"QuantizeLinear", "QLinearConv", "DequantizeLinear"}
    assert record["faster_than_fp32"] == (rows[fastest]["ratio_to_fp32"] < 1.0)


def test_ort_int8_search_prefers_accuracy(
    cnn, cnn_onnx: Path, tmp_path: Path, images: np.ndarray
) -> None:
    labels = torch_logits(cnn, images).argmax(1)
    record = choose_ort_int8(
        cnn_onnx,
        tmp_path / "int8.onnx",
        images[:64],
        (images, labels),
        ["qdq-u8s8", "qdq-s8s8"],
        timing_seconds=0.1,
        accuracy_slack=0.0,
        threads=1,
    )
    rows = {row["candidate"]: row for row in record["measurements"]}
    best = max(rows[n]["val_top1"] for n in ("qdq-u8s8", "qdq-s8s8"))
    assert rows[record["chosen"]]["val_top1"] == best


def test_fp16_onnx(cnn, cnn_onnx: Path, tmp_path: Path, images: np.ndarray) -> None:
    path = onnx_to_fp16(cnn_onnx, tmp_path / "fp16.onnx")
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    fp32_weights = [i for i in onnx.load(str(cnn_onnx)).graph.initializer if len(i.dims) == 4]
    assert sum(len(w.raw_data) for w in weights) * 2 == sum(len(w.raw_data) for w in fp32_weights)
    got = run_onnx(ort_session(path), images)
    expected = torch_logits(cnn, images)
    assert 0 < np.abs(got - expected).max() < 5e-2


def test_openvino_int8(cnn, cnn_onnx: Path, images: np.ndarray) -> None:
    model = read_onnx_as_openvino(cnn_onnx)
    quantized, info = quantize_openvino(model, images[:64])
    assert info["calibration_images"] == 64
    kinds = {op.get_type_name() for op in quantized.get_ops()}
    assert "FakeQuantize" in kinds
    got = run_openvino(compile_openvino(quantized, threads=1), images)
    expected = torch_logits(cnn, images)
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.9


def test_openvino_int8_needs_calibration(cnn_onnx: Path, images: np.ndarray) -> None:
    model = read_onnx_as_openvino(cnn_onnx)
    with pytest.raises(ExportError, match="calibration"):
        quantize_openvino(model, images[:0])
    with pytest.raises(ExportError, match="validation split"):
        quantize_openvino(model, images[:8], mode="accuracy_control", validation=None)
