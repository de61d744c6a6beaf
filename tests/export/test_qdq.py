"""The TensorRT Q/DQ graph and its static checker: passes on ours, fails on each broken rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from export.errors import QdqError
from export.onnx import ort_session, run_onnx, torch_logits
from export.qdq import ImageReader, check_tensorrt_qdq, onnx_to_tensorrt_qdq
from tests.isa import accumulates_wide


@pytest.fixture(scope="module")
def qdq_graph(tmp_path_factory, cnn_onnx: Path, images: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("qdq") / "trt.onnx"
    onnx_to_tensorrt_qdq(cnn_onnx, path, images[:64])
    return path


def _ort_quantize(src: Path, dst: Path, images: np.ndarray, **kwargs) -> Path:
    settings = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
    }
    settings.update(kwargs)
    quantize_static(str(src), str(dst), ImageReader(images), **settings)
    return dst


def test_tensorrt_graph_passes_the_checker(qdq_graph: Path) -> None:
    summary = check_tensorrt_qdq(qdq_graph)
    assert summary.quantized_weights == summary.weight_ops == 3  # two convs and the linear
    assert summary.quantize_nodes > 0 and summary.dequantize_nodes >= summary.quantize_nodes
    model = onnx.load(str(qdq_graph))
    zero_points = [
        numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")
    ]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def test_tensorrt_graph_still_computes_the_network(
    cnn, qdq_graph: Path, images: np.ndarray
) -> None:
    """The Q/DQ graph is the network within its quantisation error. Compared as logits, not
    argmax: this untrained network's logits nearly tie (median top-2 margin 0.04)."""
    expected = torch_logits(cnn, images)
    spread = float(np.ptp(expected))
    # Q/DQ run as written (in float): the same numbers on every CPU (0.012 of 0.60 measured)
    exact = run_onnx(ort_session(qdq_graph, optimize=False), images)
    assert np.abs(exact - expected).max() <= 0.05 * spread
    # fused into this CPU's integer kernels (ORT_ENABLE_ALL): how close depends on the ISA
    fused = run_onnx(ort_session(qdq_graph), images)
    if accumulates_wide():
        assert np.abs(fused - exact).max() <= 0.01 * spread  # measured: equal on AVX-512 VNNI
    else:  # 16-bit saturation: 0.092 measured under qemu-x86_64 -cpu Haswell (AVX2)
        assert np.all(np.isfinite(fused)) and np.abs(fused - expected).max() <= 0.3 * spread


def test_asymmetric_graph_fails(cnn_onnx: Path, tmp_path: Path, images: np.ndarray) -> None:
    path = _ort_quantize(cnn_onnx, tmp_path / "asym.onnx", images, activation_type=QuantType.QUInt8)
    with pytest.raises(QdqError, match="not signed INT8|asymmetric") as info:
        check_tensorrt_qdq(path)
    assert "\n" not in str(info.value)


def test_asymmetric_signed_graph_fails(cnn_onnx: Path, tmp_path: Path, images: np.ndarray) -> None:
    path = _ort_quantize(
        cnn_onnx,
        tmp_path / "asym-s8.onnx",
        images,
        extra_options={"QuantizeBias": False, "ActivationSymmetric": False},
    )
    with pytest.raises(QdqError, match="asymmetric"):
        check_tensorrt_qdq(path)


def test_per_tensor_weights_fail(cnn_onnx: Path, tmp_path: Path, images: np.ndarray) -> None:
    path = _ort_quantize(
        cnn_onnx,
        tmp_path / "per-tensor.onnx",
        images,
        per_channel=False,
        extra_options={"ActivationSymmetric": True, "QuantizeBias": False},
    )
    with pytest.raises(QdqError, match="per channel"):
        check_tensorrt_qdq(path)


def test_int32_bias_fails(cnn_onnx: Path, tmp_path: Path, images: np.ndarray) -> None:
    path = _ort_quantize(
        cnn_onnx, tmp_path / "bias.onnx", images, extra_options={"ActivationSymmetric": True}
    )
    with pytest.raises(QdqError, match="int32"):
        check_tensorrt_qdq(path)


def test_float_graph_fails(cnn_onnx: Path) -> None:
    with pytest.raises(QdqError, match="not INT8"):
        check_tensorrt_qdq(cnn_onnx)


def test_missing_zero_point_fails(qdq_graph: Path, tmp_path: Path) -> None:
    model = onnx.load(str(qdq_graph))
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    del node.input[2]  # ONNX then defaults to uint8
    with pytest.raises(QdqError, match="no zero point"):
        check_tensorrt_qdq(model)


def test_nonzero_zero_point_fails(qdq_graph: Path) -> None:
    model = onnx.load(str(qdq_graph))
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    init = next(i for i in model.graph.initializer if i.name == node.input[2])
    init.CopyFrom(
        numpy_helper.from_array(np.full(numpy_helper.to_array(init).shape, 3, np.int8), init.name)
    )
    with pytest.raises(QdqError, match="asymmetric"):
        check_tensorrt_qdq(model)
