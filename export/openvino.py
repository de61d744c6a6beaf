"""ONNX -> OpenVINO IR (``onnx_to_openvino``) in FP32, FP16 (compressed weights) and INT8.

INT8 comes from NNCF post-training quantisation (:mod:`export.quantize`) of the FP32 model.
On CPUs with BF16 OpenVINO may run an FP32 model in BF16 unless the inference precision hint
is ``f32``; every parity check here compiles with ``INFERENCE_PRECISION_HINT=f32``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError, OnnxModelError, require
from export.onnx import INPUT_NAME, check_onnx
from export.quantize import quantize_openvino
from onedge.errors import first_line

_INSTALL = "pip install openvino"


def _ov() -> Any:
    return require("openvino", "the OpenVINO backend", _INSTALL)


def read_onnx_as_openvino(onnx_path: Path) -> Any:
    """The ONNX graph as an ``openvino.Model`` (FP32), after the ONNX checker passed."""
    ov = _ov()
    check_onnx(onnx_path)
    try:
        return ov.Core().read_model(str(onnx_path))
    except Exception as exc:
        first = first_line(exc)
        raise OnnxModelError(f"OpenVINO cannot read {onnx_path}: {first}") from None


def save_openvino(model: Any, xml_path: Path, compress_to_fp16: bool) -> list[Path]:
    """Write ``model`` as IR; returns the (xml, bin) pair."""
    ov = _ov()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    files = [xml_path, xml_path.with_suffix(".bin")]
    for path in files:
        if not path.is_file():
            raise ExportError(f"OpenVINO did not write {path}")
    return files


def onnx_to_openvino(
    onnx_path: Path,
    xml_path: Path,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
    int8_mode: str = "ptq",
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    max_drop: float = 0.005,
) -> dict[str, Any]:
    """Convert ``onnx_path`` to IR at ``xml_path`` in ``precision``; returns build facts.

    ``int8`` needs ``calibration`` images; ``int8_mode="accuracy_control"`` also needs the
    ``validation`` split (images, labels) and keeps layers in FP until the top-1 drop is at most
    ``max_drop``.
    """
    model = read_onnx_as_openvino(onnx_path)
    facts: dict[str, Any] = {"precision": precision}
    if precision == "fp32":
        save_openvino(model, xml_path, compress_to_fp16=False)
    elif precision == "fp16":
        save_openvino(model, xml_path, compress_to_fp16=True)
        facts["weights"] = "fp16 (compressed IR, computed in the device's precision)"
    elif precision == "int8":
        if calibration is None:
            raise ExportError("OpenVINO INT8 needs calibration images")
        quantized, info = quantize_openvino(
            model, calibration, mode=int8_mode, validation=validation, max_drop=max_drop
        )
        save_openvino(quantized, xml_path, compress_to_fp16=False)
        facts.update(info)
    else:
        raise ExportError(f"OpenVINO precision {precision!r} is not one of fp32, fp16, int8")
    return facts


def reshape_static(source_xml: Path, xml_path: Path, batch: int = 1) -> list[int]:
    """Write the IR at ``source_xml`` with its batch axis fixed to ``batch``; the input shape.

    The weights are written as they are stored (FP16 stays FP16, INT8 stays INT8). OpenVINO
    compiles a static shape into fixed kernels and memory plans: on 2 cores it took 20-30% off
    the batch-1 latency of onedge's students (docs/BENCHMARKS.md).
    """
    ov = _ov()
    model = ov.Core().read_model(str(source_xml))
    dims = list(model.input(0).get_partial_shape())
    if len(dims) < 2 or any(d.is_dynamic for d in dims[1:]):
        raise ExportError(
            f"{source_xml}: only the batch axis may be dynamic to fix a static shape, "
            f"the input is {model.input(0).get_partial_shape()}"
        )
    shape = [batch, *(d.get_length() for d in dims[1:])]
    model.reshape({model.input(0): shape})
    save_openvino(model, xml_path, compress_to_fp16=False)
    return shape


def compile_openvino(
    model: Any,
    threads: int | None = None,
    exact_f32: bool = True,
    latency: bool = True,
) -> Any:
    """Compile an IR path or ``openvino.Model`` for the CPU.

    ``exact_f32`` sets ``INFERENCE_PRECISION_HINT=f32`` (no silent BF16); ``latency`` asks for
    the latency hint (one stream), which is what batch-1 timing on a board wants.
    """
    ov = _ov()
    core = ov.Core()
    if isinstance(model, str | Path):
        if not Path(model).is_file():
            raise ExportError(f"OpenVINO IR {model} does not exist")
        model = core.read_model(str(model))
    config: dict[str, Any] = {}
    if exact_f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if latency:
        config["PERFORMANCE_HINT"] = "LATENCY"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)


def run_openvino(compiled: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``images`` through a compiled OpenVINO model, in batches (in its input type)."""
    request = compiled.create_infer_request()
    dtype = compiled.input(0).get_element_type().to_dtype()
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start : start + batch_size], dtype=dtype)
        result = request.infer({INPUT_NAME: chunk})
        outputs.append(np.array(result[compiled.output(0)], dtype=np.float32))
    return np.concatenate(outputs)
