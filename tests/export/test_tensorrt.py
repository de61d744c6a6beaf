"""TensorRT: the pure parts here (trtexec argv, settings, compatibility); real builds on a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from export.config import TensorRTOptions
from export.errors import BackendNotInstalledError, EngineMismatchError, ExportError
from export.onnx import torch_logits
from export.qdq import onnx_to_tensorrt_qdq
from export.quantize import onnx_to_fp16
from export.tensorrt import (
    build_settings,
    check_engine_compatible,
    check_graph_precision,
    graph_precision,
    load_engine,
    onnx_to_tensorrt,
    run_engine,
    trtexec_command,
)

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = HAS_TRT and torch.cuda.is_available()
GPU_REASON = (
    "needs an NVIDIA GPU with CUDA and the tensorrt package "
    f"(tensorrt importable: {HAS_TRT}, CUDA available: {torch.cuda.is_available()})"
)


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "") for arg in argv[1:])


def test_trtexec_int8_command() -> None:
    options = TensorRTOptions(min_batch=1, opt_batch=8, max_batch=32, workspace_mib=512)
    argv = trtexec_command("m.onnx", "out/m.engine", "int8", (1, 28, 28), options)
    assert argv[0] == "trtexec"
    flags = _flags(argv)
    assert flags["onnx"] == "m.onnx" and flags["saveEngine"] == "out/m.engine"
    assert flags["minShapes"] == "input:1x1x28x28"
    assert flags["optShapes"] == "input:8x1x28x28"
    assert flags["maxShapes"] == "input:32x1x28x28"
    assert flags["memPoolSize"] == "workspace:512"
    assert "int8" in flags and "fp16" in flags
    assert flags["timingCacheFile"] == str(Path("out") / "timing.cache")
    assert "skipInference" in flags and flags["builderOptimizationLevel"] == "3"


@pytest.mark.parametrize(
    ("version", "present", "absent"),
    [
        ("10.3.0", {"memPoolSize", "skipInference", "builderOptimizationLevel"}, {"workspace"}),
        ("8.5.2", {"memPoolSize", "buildOnly"}, {"skipInference", "builderOptimizationLevel"}),
        ("8.2.1", {"workspace", "buildOnly"}, {"memPoolSize", "skipInference"}),
    ],
)
def test_trtexec_flags_follow_the_board_version(version: str, present: set, absent: set) -> None:
    flags = _flags(trtexec_command("m.onnx", "m.engine", "fp16", (3, 32, 32), trt_version=version))
    assert present <= set(flags) and not absent & set(flags)
    assert "fp16" in flags and "int8" not in flags


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt11_takes_the_precision_from_the_graph(precision: str) -> None:
    argv = trtexec_command("m.onnx", "m.engine", precision, (1, 8, 8), trt_version="11.4.0")
    assert not {"fp16", "int8", "best"} & set(_flags(argv))
    assert "--skipInference" in argv and "--memPoolSize=workspace:1024" in argv


def test_fp32_command_has_no_precision_flag() -> None:
    flags = _flags(trtexec_command("m.onnx", "m.engine", "fp32", (3, 32, 32), build_only=False))
    assert not {"fp16", "int8", "skipInference", "buildOnly"} & set(flags)


def test_profile_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        TensorRTOptions(min_batch=4, opt_batch=2, max_batch=8)


def test_build_settings_record_the_command() -> None:
    settings = build_settings("int8", (1, 8, 8), TensorRTOptions())
    assert settings["profile"] == {"min": 1, "opt": 1, "max": 64}
    assert settings["trtexec"][1] == "--onnx=model.onnx"
    assert "--int8" in settings["trtexec"] and settings["int8_source"]
    assert "--int8" not in settings["trtexec_tensorrt11"]


def test_graph_precision(cnn_onnx: Path, tmp_path: Path, images: np.ndarray) -> None:
    fp16 = onnx_to_fp16(cnn_onnx, tmp_path / "fp16.onnx")
    qdq = tmp_path / "qdq.onnx"
    onnx_to_tensorrt_qdq(cnn_onnx, qdq, images[:32])
    assert [graph_precision(p) for p in (cnn_onnx, fp16, qdq)] == ["fp32", "fp16", "int8"]
    check_graph_precision(cnn_onnx, "fp16", strongly_typed=False)  # the FP16 flag lowers it
    for strongly_typed in (False, True):
        check_graph_precision(fp16, "fp16", strongly_typed)
        check_graph_precision(qdq, "int8", strongly_typed)
        with pytest.raises(ExportError, match="tensorrt-int8 artifact"):
            check_graph_precision(cnn_onnx, "int8", strongly_typed)
        with pytest.raises(ExportError, match="fp16 graph, which cannot build a fp32 engine"):
            check_graph_precision(fp16, "fp32", strongly_typed)
    with pytest.raises(ExportError, match="strongly typed"):
        check_graph_precision(cnn_onnx, "fp16", strongly_typed=True)


def test_engine_from_another_gpu_is_refused() -> None:
    recorded = {"tensorrt_version": "10.3.0", "gpu": "Orin (nvgpu)"}
    check_engine_compatible(recorded, "10.3.0", "Orin (nvgpu)")
    with pytest.raises(EngineMismatchError, match="rebuild") as info:
        check_engine_compatible(recorded, "10.3.0", "NVIDIA H100 80GB HBM3")
    assert "Orin (nvgpu)" in str(info.value) and "NVIDIA H100" in str(info.value)
    with pytest.raises(EngineMismatchError, match="TensorRT 8.6.1.*rebuild"):
        check_engine_compatible({**recorded, "tensorrt_version": "8.6.1"}, "10.3.0", "Orin (nvgpu)")
    with pytest.raises(EngineMismatchError, match="does not record"):
        check_engine_compatible({}, "10.3.0", "Orin (nvgpu)")


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_typed_error(cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendNotInstalledError, match="pip install") as info:
        onnx_to_tensorrt(cnn_onnx, tmp_path / "m.engine", "fp16", (1, 12, 12))
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason=GPU_REASON)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_real_engine_build(
    cnn, cnn_onnx: Path, tmp_path: Path, images: np.ndarray, precision: str
) -> None:
    source = onnx_to_fp16(cnn_onnx, tmp_path / "fp16.onnx")
    if precision == "int8":
        source = tmp_path / "qdq.onnx"
        onnx_to_tensorrt_qdq(cnn_onnx, source, images[:64])
    options = TensorRTOptions(min_batch=1, opt_batch=4, max_batch=16)
    engine_path = tmp_path / "model.engine"
    facts = onnx_to_tensorrt(source, engine_path, precision, (1, 12, 12), options)
    assert engine_path.stat().st_size > 0 and (tmp_path / "timing.cache").is_file()
    engine = load_engine(engine_path, facts)
    got = run_engine(engine, images[:16])
    expected = torch_logits(cnn, images[:16])
    assert got.shape == (16, 10)
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.9
    with pytest.raises(EngineMismatchError, match="rebuild"):
        load_engine(engine_path, {**facts, "tensorrt_version": "0.0.1"})
