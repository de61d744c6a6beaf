"""INT8 and FP16 variants of the FP32 student, calibrated on the calibration split only.

- OpenVINO INT8: NNCF post-training quantisation, or its accuracy-controlled mode that keeps
  layers in FP until the validation top-1 drop is within budget (:func:`quantize_openvino`).
- ONNX Runtime CPU INT8: one artifact per variant (:data:`ORT_INT8_VARIANTS`: today's 8-bit
  weights, and reduce-range 7-bit weights for x86 CPUs without VNNI), each validated on every
  target. Within a variant, several formats and options are built, timed at batch 1 on this
  CPU and scored on the validation split; the fastest at equal accuracy is kept and every
  measurement is recorded (:func:`choose_ort_int8`). That search is a pre-filter within a
  variant only: it never chooses between variants, whose accuracy depends on the target's
  instruction set. Naive INT8 is not a speed-up: measure.
- TensorRT INT8: the symmetric S8S8 per-channel Q/DQ graph, with its static checker
  (:func:`check_tensorrt_qdq`, in :mod:`export.qdq`).
- FP16: ONNX with FP16 weights and compute, float32 input and output (:func:`onnx_to_fp16`);
  OpenVINO FP16 is the compressed IR written by :func:`export.openvino.onnx_to_openvino`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError, require
from export.onnx import INPUT_NAME, check_onnx, load_onnx, ort_session, run_onnx
from export.parity import top1_accuracy
from export.qdq import (
    ImageReader,
    QdqSummary,
    check_tensorrt_qdq,
    onnx_to_tensorrt_qdq,
    quiet_logging,
)
from export.timing import Latency, cpu_name, interleaved
from onedge.errors import first_line

__all__ = [
    "ORT_INT8_VARIANTS",
    "OrtInt8Candidate",
    "QdqSummary",
    "check_tensorrt_qdq",
    "choose_ort_int8",
    "onnx_to_fp16",
    "onnx_to_tensorrt_qdq",
    "parse_ort_candidate",
    "quantize_onnx_cpu",
    "quantize_openvino",
    "variant_candidates",
]

_NNCF_INSTALL = "pip install nncf"
_ORT_INSTALL = "pip install onnxruntime"


def quantize_openvino(
    model: Any,
    calibration: np.ndarray,
    mode: str = "ptq",
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    max_drop: float = 0.005,
    batch_size: int = 32,
) -> tuple[Any, dict[str, Any]]:
    """INT8 ``openvino.Model`` from an FP32 one; returns it and the facts to record.

    Calibration runs over batches of ``batch_size`` images; ``accuracy_control`` keeps layers
    in FP until the validation top-1 drop is at most ``max_drop`` (absolute).
    """
    nncf = require("nncf", "OpenVINO INT8 quantisation", _NNCF_INSTALL)
    nncf.set_log_level(logging.ERROR)
    if len(calibration) == 0:
        raise ExportError("OpenVINO INT8 needs calibration images; none were given")
    # NNCF averages per-item activation ranges: batch-1 items narrow them and clip outliers
    # (measured here: 5x the mean logit error of batches of 32 on Fashion-MNIST)
    items = [
        np.ascontiguousarray(calibration[i : i + batch_size], dtype=np.float32)
        for i in range(0, len(calibration), batch_size)
    ]
    dataset = nncf.Dataset(items)
    info: dict[str, Any] = {
        "method": "nncf",
        "mode": mode,
        "calibration_images": len(calibration),
        "calibration_batch": batch_size,
    }
    common = {
        "subset_size": len(items),  # NNCF counts dataset items (batches here)
        "preset": nncf.QuantizationPreset.PERFORMANCE,  # symmetric, fastest on CPU
        "target_device": nncf.TargetDevice.CPU,
    }
    if mode == "ptq":
        return nncf.quantize(model, dataset, **common), info
    if mode != "accuracy_control":
        raise ExportError(f"OpenVINO INT8 mode {mode!r} is not one of ptq, accuracy_control")
    quantized, facts = _accuracy_controlled(nncf, model, dataset, validation, max_drop, common)
    info.update(facts)
    return quantized, info


def _openvino_top1(compiled: Any, data: Any) -> float:
    """Top-1 of a compiled OpenVINO model over (image, label) items: NNCF's validation_fn."""
    correct = total = 0
    for image, label in data:
        logits = compiled(image)[0]
        correct += int(np.argmax(logits) == label)
        total += 1
    return correct / max(total, 1)


def _accuracy_controlled(
    nncf: Any,
    model: Any,
    dataset: Any,
    validation: tuple[np.ndarray, np.ndarray] | None,
    max_drop: float,
    common: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """NNCF's accuracy-controlled INT8: layers kept in FP until the top-1 drop is in budget."""
    if validation is None or len(validation[0]) == 0:
        raise ExportError("accuracy-controlled INT8 needs the validation split; it is empty")
    images, labels = validation
    val_items = [
        (np.ascontiguousarray(image[None], dtype=np.float32), int(label))
        for image, label in zip(images, labels, strict=True)
    ]
    quantized = nncf.quantize_with_accuracy_control(
        model,
        dataset,
        nncf.Dataset(val_items, lambda item: item[0]),
        validation_fn=_openvino_top1,
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        **common,
    )
    return quantized, {"max_drop": max_drop, "validation_images": len(val_items)}


@dataclass(frozen=True)
class OrtInt8Candidate:
    """One ONNX Runtime INT8 recipe: graph format, activation/weight types, pre-processing,
    and whether weights use 7 of their 8 bits (``reduce_range``)."""

    name: str
    quant_format: str  # "qdq" or "qoperator"
    activations: str  # "u8" or "s8"
    weights: str  # "s8" or "u8"
    preprocess: bool
    reduce_range: bool = False


# The ONNX Runtime INT8 variants exported side by side, each its own artifact (onnx-int8<suffix>):
# they differ in how they behave across instruction sets, so every target measures each one.
# On x86 without VNNI, ONNX Runtime's u8s8 kernels add pairs of 8-bit products in 16 bits
# (vpmaddubsw), which saturates; 7-bit weights cannot saturate there (ONNX Runtime's
# quantization docs). VNNI (vpdpbusd), AMX and arm64's dot-product kernels accumulate in 32 bits.
ORT_INT8_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {
        "suffix": "",
        "reduce_range": False,
        "meant_for": ["x86_64 avx512_vnni", "x86_64 avx_vnni", "x86_64 amx_int8",
                      "aarch64 asimd", "aarch64 asimddp", "aarch64 i8mm"],
        "why": "8-bit weights: the most accurate where the INT8 kernels accumulate in 32 bits",
    },
    "reduce-range": {
        "suffix": "-rr",
        "reduce_range": True,
        "meant_for": ["x86_64 avx2", "x86_64 avx512f", "x86_64 (no avx2)"],
        "why": "7-bit weights: no 16-bit saturation in the u8s8 kernels of x86 CPUs without "
        "VNNI; the same results on every CPU, at half the weight resolution",
    },
}  # fmt: skip


def variant_candidates(candidates: list[str], variant: str) -> list[str]:
    """The search's candidate names for one variant (``-rr`` appended for reduce-range)."""
    if variant not in ORT_INT8_VARIANTS:
        raise ExportError(
            f"ONNX Runtime INT8 variant {variant!r} is not one of {', '.join(ORT_INT8_VARIANTS)}"
        )
    suffix = "-rr" if ORT_INT8_VARIANTS[variant]["reduce_range"] else ""
    base = [name.strip().lower().removesuffix("-rr") for name in candidates]
    return [f"{name}{suffix}" for name in dict.fromkeys(base)]


def parse_ort_candidate(name: str) -> OrtInt8Candidate:
    """``qdq-u8s8``, ``qoperator-s8s8-pre``, ``qdq-s8s8-pre-rr`` ... -> :class:`OrtInt8Candidate`."""
    parts = name.strip().lower().split("-")
    ok = 2 <= len(parts) <= 4 and parts[0] in ("qdq", "qoperator") and len(parts[1]) == 4
    if ok:
        act, weight = parts[1][:2], parts[1][2:]
        options = [[], ["pre"], ["rr"], ["pre", "rr"]]
        ok = act in ("u8", "s8") and weight in ("u8", "s8") and parts[2:] in options
    if not ok:
        raise ExportError(
            f"ONNX Runtime INT8 candidate {name!r} is not "
            "<qdq|qoperator>-<u8|s8><u8|s8>[-pre][-rr], for example qdq-u8s8, "
            "qoperator-s8s8-pre or qdq-s8s8-pre-rr (-rr: reduce_range, 7-bit weights)"
        )
    return OrtInt8Candidate(name, parts[0], act, weight, "pre" in parts[2:], "rr" in parts[2:])


def quantize_onnx_cpu(
    src: Path,
    dst: Path,
    calibration: np.ndarray,
    candidate: OrtInt8Candidate,
    per_channel: bool = True,
    nodes_to_exclude: list[str] | None = None,
) -> Path:
    """Static INT8 quantisation of ``src`` for ONNX Runtime on CPU with ``candidate``'s recipe.

    ``nodes_to_exclude`` names nodes kept in float (INT8 repair, :mod:`export.int8_repair`).
    """
    require("onnxruntime.quantization", "ONNX INT8 quantisation", _ORT_INSTALL)
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    check_onnx(src)
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, quiet_logging():
        source = Path(src)
        if candidate.preprocess:
            source = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(source), skip_symbolic_shape=False)
        quantize_static(
            str(source),
            str(dst),
            ImageReader(calibration),
            quant_format=QuantFormat.QDQ
            if candidate.quant_format == "qdq"
            else QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=types[candidate.activations],
            weight_type=types[candidate.weights],
            reduce_range=candidate.reduce_range,
            nodes_to_exclude=list(nodes_to_exclude or []),
        )
    return dst


def choose_ort_int8(
    src: Path,
    dst: Path,
    calibration: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
    candidates: list[str],
    per_channel: bool = True,
    timing_seconds: float = 1.0,
    accuracy_slack: float = 0.002,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build every candidate, time it at batch 1 against FP32, keep the fastest at equal accuracy.

    Accuracy is validation top-1; candidates within ``accuracy_slack`` of the best count as
    equal. The chosen graph is copied to ``dst``; the returned record lists every candidate's
    p50/p99 latency, its ratio to ONNX Runtime FP32 measured in the same interleaved run, and
    its validation top-1.
    """
    parsed = [parse_ort_candidate(name) for name in candidates]
    if not parsed:
        raise ExportError("no ONNX Runtime INT8 candidates were given")
    images, labels = validation
    if len(images) == 0:
        raise ExportError("choosing the ONNX Runtime INT8 recipe needs validation images")
    with tempfile.TemporaryDirectory() as tmp:
        built = _build_candidates(src, Path(tmp), calibration, parsed, per_channel, threads)
        sessions, paths, failures = built
        accuracy = {
            name: top1_accuracy(run_onnx(s, images), labels) for name, s in sessions.items()
        }
        latency = _batch1_latency(sessions, images[:1], timing_seconds)
        best = max(accuracy[name] for name in paths)
        eligible = [name for name in paths if accuracy[name] >= best - accuracy_slack]
        chosen = min(eligible, key=lambda name: latency[name].p50)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[chosen], dst)
    fp32_p50 = latency["fp32"].p50
    recipes = {c.name: asdict(c) for c in parsed if c.name in paths}
    measured = [
        _measurement(name, recipes.get(name), latency[name], fp32_p50, accuracy[name])
        for name in sessions
    ]
    return {
        "chosen": chosen,
        "per_channel": per_channel,
        "rule": f"fastest batch-1 p50 among candidates within {accuracy_slack:.3f} of the best "
        "validation top-1",
        "faster_than_fp32": latency[chosen].p50 < fp32_p50,
        "measurements": measured,
        "failed": failures,
        "threads": threads,
        "cpu": cpu_name(),  # the recipe is chosen for this CPU; another may prefer another
        "validation_images": len(images),
    }


def _measurement(
    name: str, recipe: dict[str, Any] | None, latency: Latency, fp32_p50: float, top1: float
) -> dict[str, Any]:
    """What the search records about one candidate (FP32 included, its recipe None)."""
    return {
        "candidate": name,
        "recipe": recipe,
        "p50_ms": latency.p50,
        "p99_ms": latency.p99,
        "ratio_to_fp32": latency.p50 / fp32_p50,
        "val_top1": top1,
    }


def _build_candidates(
    src: Path,
    work: Path,
    calibration: np.ndarray,
    parsed: list[OrtInt8Candidate],
    per_channel: bool,
    threads: int | None,
) -> tuple[dict[str, Any], dict[str, Path], dict[str, str]]:
    """Every candidate quantised into ``work``: the sessions (FP32 first), paths and failures."""
    sessions: dict[str, Any] = {"fp32": ort_session(src, threads)}
    paths: dict[str, Path] = {}
    failures: dict[str, str] = {}
    for candidate in parsed:
        path = work / f"{candidate.name}.onnx"
        try:
            quantize_onnx_cpu(src, path, calibration, candidate, per_channel)
            sessions[candidate.name] = ort_session(path, threads)
            paths[candidate.name] = path
        except Exception as exc:  # recorded, and that candidate is out
            failures[candidate.name] = first_line(exc)
    if not paths:
        raise ExportError(f"every ONNX Runtime INT8 candidate failed: {failures}")
    return sessions, paths, failures


def _batch1_latency(
    sessions: dict[str, Any], image: np.ndarray, timing_seconds: float
) -> dict[str, Latency]:
    """Batch-1 latency of every session, timed interleaved in one run."""
    feed = {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)}
    calls = {name: partial(session.run, None, feed) for name, session in sessions.items()}
    return interleaved(
        calls,
        batch=1,
        warmup_s=0.3,
        min_seconds=timing_seconds * len(calls),
        min_calls=100,
        rounds=10,
    )


def onnx_to_fp16(src: Path, dst: Path) -> Path:
    """FP16 weights and compute, float32 input/output so it is fed like the FP32 graph."""
    import onnx

    require("onnxruntime.transformers.float16", "FP16 ONNX conversion", _ORT_INSTALL)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_onnx(src)
    check_onnx(src)
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    sort_nodes(converted.graph)  # the converter appends its input casts at the end
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(converted, str(dst))
    check_onnx(dst)
    return Path(dst)


def sort_nodes(graph: Any) -> None:
    """Reorder ``graph.node`` topologically in place (wave by wave, keeping order in a wave)."""
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    available.add("")  # omitted optional inputs
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ExportError("the graph has a cycle or reads a tensor nothing produces")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
