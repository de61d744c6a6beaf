"""PyTorch student -> ONNX (``torch_to_onnx``), checked, with metadata, and run by ONNX Runtime.

The graph has one input ``input`` (N, C, H, W float32, dynamic N) and one output ``logits``
(N, classes). Its ``metadata_props`` carry the class names, the normalisation and the sha256
of the source checkpoint, so a runtime holding only the .onnx file knows how to feed it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.errors import OnnxModelError, require
from export.parity import ParityReport, check_parity, compare_logits
from onedge.errors import first_line

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 17
DYNAMO_MIN_OPSET = 18  # lowest opset the torch.export-based exporter writes without conversion
_ORT_INSTALL = "pip install onnxruntime"


def onnx_metadata(
    class_names: list[str],
    mean: list[float],
    std: list[float],
    scale: float,
    checkpoint_sha256: str,
    branch: int,
) -> dict[str, str]:
    """The ``metadata_props`` every onedge ONNX file carries (values are strings)."""
    return {
        "onedge.class_names": json.dumps(list(class_names)),
        "onedge.normalization": json.dumps(
            {"mean": list(mean), "std": list(std), "scale": scale, "layout": "NCHW"}
        ),
        "onedge.source_checkpoint_sha256": checkpoint_sha256,
        "onedge.branch": str(branch),
    }


def read_metadata(model: Any) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def set_metadata(model: Any, metadata: dict[str, str]) -> None:
    existing = {prop.key: prop for prop in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)


def torch_to_onnx(
    module: nn.Module,
    path: Path,
    example: torch.Tensor,
    opset: int = 18,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``module`` in eval mode to ``path`` (dynamic batch), check and annotate it."""
    import onnx

    if opset < MIN_OPSET:
        raise OnnxModelError(f"opset {opset} is too old: onedge exports opset {MIN_OPSET} or newer")
    if example.dim() != 4:
        raise OnnxModelError(f"example input must be NCHW, got shape {tuple(example.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    # batch 2: torch.export specialises a dimension whose example size is 1
    example = example[:1].expand(2, *example.shape[1:]).contiguous()
    try:
        with _quiet_exporter():
            if opset >= DYNAMO_MIN_OPSET:
                model = _dynamo_export(module, example, opset)
            else:  # the torch.export-based exporter starts at 18; 17 takes the TorchScript one
                model = _torchscript_export(module, example, opset)
    except Exception as exc:
        first = first_line(exc)
        raise OnnxModelError(f"torch.onnx.export failed for the student: {first}") from exc
    produced = _opset(model)
    if produced != opset:
        raise OnnxModelError(f"asked for ONNX opset {opset}, the exporter produced {produced}")
    set_metadata(model, metadata or {})
    model.producer_name = "onedge"
    onnx.save_model(model, str(path))
    check_onnx(path)
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """No gradients, and the exporter's warnings, prints and INFO logging held back."""
    logger = logging.getLogger("torch.onnx")
    old_level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old_level)


def _dynamo_export(module: nn.Module, example: torch.Tensor, opset: int) -> Any:
    """The torch.export-based exporter (opset 18 and newer), dynamic batch."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.onnx.export(
        module,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
        verbose=False,
    ).model_proto


def _torchscript_export(module: nn.Module, example: torch.Tensor, opset: int) -> Any:
    """The TorchScript exporter (opset 17), dynamic batch axis."""
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buffer,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


def load_onnx(path: Path) -> Any:
    """Load and check an ONNX file, raising :class:`OnnxModelError` with one clear line."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise OnnxModelError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again"
        ) from None
    return model


def check_onnx(path: Path) -> Any:
    """``onnx.checker`` (full check, with strict shape inference) plus onedge's I/O contract."""
    import onnx

    model = load_onnx(path)
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        first = first_line(exc)
        raise OnnxModelError(f"{path} fails the ONNX checker: {first}") from None
    inputs = [value.name for value in inferred.graph.input]
    outputs = [value.name for value in inferred.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise OnnxModelError(
            f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
            f"found inputs {inputs} and outputs {outputs}"
        )
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise OnnxModelError(f"{path}: opset {opset} is older than {MIN_OPSET}")
    return inferred


def _opset(model: Any) -> int:
    return max(
        (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")),
        default=0,
    )


def ort_session(path: Path, threads: int | None = None, optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session for ``path``; a corrupt file raises :class:`OnnxModelError`."""
    ort = require("onnxruntime", "running ONNX models", _ORT_INSTALL)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX file {path} does not exist")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = first_line(exc)
        raise OnnxModelError(f"ONNX Runtime cannot load {path}: {first}") from None


ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def run_onnx(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``images`` through an ONNX Runtime session, in batches.

    The images are given to the graph in its input's type: float32 NCHW normalised images, or
    the raw images of a graph with embedded preprocessing (uint8 where the data set is uint8).
    """
    dtype = ORT_DTYPES.get(session.get_inputs()[0].type, np.float32)
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start : start + batch_size], dtype=dtype)
        outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: chunk})[0])
    return np.concatenate(outputs).astype(np.float32)


def torch_logits(module: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """FP32 logits of the PyTorch module in eval mode (the reference every artifact meets)."""
    module = module.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            outputs.append(module(chunk.float()).float().numpy())
    return np.concatenate(outputs)


def onnx_parity(
    path: Path,
    reference: np.ndarray,
    images: np.ndarray,
    max_abs_diff: float | None,
    min_agreement: float,
    threads: int | None = None,
    what: str | None = None,
) -> ParityReport:
    """Run ``path`` on ``images`` and compare with ``reference`` logits; fail beyond tolerance."""
    logits = run_onnx(ort_session(path, threads), images)
    report = compare_logits(reference, logits)
    return check_parity(report, what or f"ONNX {Path(path).name}", max_abs_diff, min_agreement)
