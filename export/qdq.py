"""The INT8 Q/DQ graph TensorRT builds from, and the static checker that proves its rules.

TensorRT's explicit quantisation wants signed INT8, symmetric (every zero point 0), weights
quantised per output channel (axis 0), Q/DQ only in INT8 (no INT32 bias DequantizeLinear).
ONNX Runtime's CPU defaults (asymmetric uint8 activations) break these rules, so the graph is
built with its own settings and :func:`check_tensorrt_qdq` proves them without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import QdqError, require
from export.onnx import INPUT_NAME, check_onnx, load_onnx

_INSTALL = "pip install onnxruntime"
WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}  # op -> weight input index


@contextlib.contextmanager
def quiet_logging(level: int = logging.ERROR) -> Iterator[None]:
    """Hold the root logger at ``level``: the quantiser logs advice through it at WARNING."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(old)


class ImageReader:
    """An ONNX Runtime ``CalibrationDataReader`` over NCHW images, in fixed batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 32) -> None:
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.batch_size = batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self.position = 0


def onnx_to_tensorrt_qdq(src: Path, dst: Path, calibration: np.ndarray) -> QdqSummary:
    """Build the S8S8 symmetric, per-channel Q/DQ graph of ``src`` at ``dst`` and check it."""
    require("onnxruntime.quantization", "building the TensorRT Q/DQ graph", _INSTALL)
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    check_onnx(src)
    if len(calibration) == 0:
        raise QdqError("the TensorRT Q/DQ graph needs calibration images; none were given")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with quiet_logging():
        quantize_static(
            str(src),
            str(dst),
            ImageReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "MaxPool"],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "AddQDQPairToWeight": True,  # float weights behind Q -> DQ, folded by TensorRT
                "DedicatedQDQPair": True,
                "QuantizeBias": False,  # TensorRT has no INT32 DequantizeLinear
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            },
        )
    return check_tensorrt_qdq(dst)


@dataclass(frozen=True)
class QdqSummary:
    """What :func:`check_tensorrt_qdq` found in a graph that passed."""

    quantize_nodes: int
    dequantize_nodes: int
    quantized_weights: int
    weight_ops: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def check_tensorrt_qdq(model: Any) -> QdqSummary:
    """Prove a Q/DQ graph (ModelProto or path) meets TensorRT's explicit-quantisation rules.

    Checks: every QuantizeLinear/DequantizeLinear has an INT8 zero point that is all zeros and
    positive scales; every DequantizeLinear reads a QuantizeLinear or an INT8 constant; every
    quantised weight of Conv/Gemm/MatMul is per channel on its output axis (axis 0 for Conv
    and transposed Gemm weights) with one scale per channel; at least one weight is quantised.
    Raises :class:`QdqError` naming the first offending node.
    """
    if isinstance(model, str | Path):
        check_onnx(model)
        model = load_onnx(model)
    graph = model.graph
    constants = _graph_constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    if not quantize and not dequantize:
        raise QdqError("the graph has no QuantizeLinear/DequantizeLinear nodes: it is not INT8")
    for node in quantize + dequantize:
        _check_scale_and_zero_point(node, constants)
    for node in dequantize:
        _check_dequantize_source(node, producer, constants)
    weight_ops = [n for n in graph.node if n.op_type in WEIGHT_OPS]
    quantized_weights = sum(_check_weight(node, producer, constants) for node in weight_ops)
    if quantized_weights == 0:
        raise QdqError("no Conv/Gemm/MatMul weight is quantised: the graph would not run in INT8")
    return QdqSummary(len(quantize), len(dequantize), quantized_weights, len(weight_ops))


def _graph_constants(graph: Any) -> dict[str, np.ndarray]:
    """Every constant of the graph by name: initializers and Constant nodes."""
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return constants


def _check_dequantize_source(
    node: Any, producer: dict[str, Any], constants: dict[str, np.ndarray]
) -> None:
    """A DequantizeLinear reads an INT8 constant or a QuantizeLinear, nothing else."""
    source = node.input[0]
    if source in constants:
        if constants[source].dtype != np.int8:
            raise QdqError(
                f"DequantizeLinear {node.name!r} reads a {constants[source].dtype} constant; "
                "TensorRT needs INT8"
            )
    elif source not in producer or producer[source].op_type != "QuantizeLinear":
        raise QdqError(
            f"DequantizeLinear {node.name!r} does not follow a QuantizeLinear: "
            "TensorRT needs Q/DQ pairs"
        )


def _check_weight(node: Any, producer: dict[str, Any], constants: dict[str, np.ndarray]) -> bool:
    """Whether the weight of a Conv/Gemm/MatMul is quantised; raises unless per channel."""
    index = WEIGHT_OPS[node.op_type]
    if len(node.input) <= index:
        return False
    dq = producer.get(node.input[index])
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    weight = _weight_behind(dq, producer, constants)
    if weight is None:
        return False
    axis = _per_channel_axis(node)
    scale = constants[dq.input[1]]
    attr_axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale.ndim != 1 or scale.size != weight.shape[axis] or attr_axis % weight.ndim != axis:
        raise QdqError(
            f"weight of {node.op_type} {node.name!r} is not quantised per channel on axis "
            f"{axis} (scale shape {list(scale.shape)}, axis {attr_axis}, weight "
            f"{list(weight.shape)}); TensorRT needs per-output-channel weights"
        )
    return True


def _check_scale_and_zero_point(node: Any, constants: dict[str, np.ndarray]) -> None:
    kind = node.op_type
    if len(node.input) < 3 or not node.input[2]:
        raise QdqError(
            f"{kind} {node.name!r} has no zero point, so ONNX makes it uint8; "
            "TensorRT needs an explicit INT8 zero point of 0"
        )
    scale_name, zero_name = node.input[1], node.input[2]
    if scale_name not in constants or zero_name not in constants:
        raise QdqError(f"{kind} {node.name!r}: scale and zero point must be constants")
    zero, scale = constants[zero_name], constants[scale_name]
    if zero.dtype != np.int8:
        raise QdqError(
            f"{kind} {node.name!r} quantises to {zero.dtype}, not signed INT8 "
            "(build the graph with S8S8, symmetric)"
        )
    if np.any(zero != 0):
        raise QdqError(
            f"{kind} {node.name!r} is asymmetric (zero point {zero.ravel()[:4].tolist()}); "
            "TensorRT needs symmetric quantisation, zero point 0"
        )
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise QdqError(f"{kind} {node.name!r} has a non-positive or non-finite scale")


def _weight_behind(
    dq: Any, producer: dict[str, Any], constants: dict[str, np.ndarray]
) -> np.ndarray | None:
    """The constant weight a DequantizeLinear restores (directly or through its Quantize)."""
    source = dq.input[0]
    if source in constants:
        return constants[source]
    q = producer.get(source)
    if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in constants:
        return constants[q.input[0]]
    return None


def _per_channel_axis(node: Any) -> int:
    """The output-channel axis of a weight: 0 for Conv and Gemm(transB=1), 1 otherwise."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1  # MatMul: (in, out)
