"""ONNX -> TensorRT engine (``onnx_to_tensorrt``) and the trtexec command that builds it on a board.

An engine is tied to the GPU model and the exact TensorRT version it was built with, so the
exporter ships the ONNX with the build settings, and the engine is built where it runs. The
precision lives in the graph (FP32 graph, FP16 graph, the checked Q/DQ graph for INT8), which
both generations accept: TensorRT up to 10.x (JetPack) also gets the precision flags, while
TensorRT 11 removed them and builds every network strongly typed, from the graph's own types. An engine's manifest records the
TensorRT version and GPU; :func:`check_engine_compatible` refuses another GPU or version with
a message telling the user to rebuild. ``tensorrt`` is imported lazily: nothing here needs a
GPU until an engine is built or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.config import TensorRTOptions
from export.errors import EngineMismatchError, ExportError, require
from export.onnx import load_onnx

_INSTALL = "pip install 'onedge[tensorrt]' on a machine with an NVIDIA GPU (JetPack ships it)"
ENGINE_FILE = "model.engine"
STRONGLY_TYPED_ONLY = (11,)  # TensorRT 11 removed the precision builder flags


def _trt() -> Any:
    return require("tensorrt", "building or loading TensorRT engines", _INSTALL)


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def _shape(batch: int, chw: tuple[int, int, int]) -> str:
    return "x".join(str(d) for d in (batch, *chw))


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str,
    input_chw: tuple[int, int, int],
    options: TensorRTOptions | None = None,
    input_name: str = "input",
    trt_version: str | None = None,
    trtexec: str = "trtexec",
    build_only: bool = True,
) -> list[str]:
    """argv for trtexec building the same engine as :func:`onnx_to_tensorrt` would.

    ``trt_version`` (e.g. "8.5.2", from the board) picks flags the installed trtexec knows:
    ``--memPoolSize`` from 8.4 (``--workspace`` before), ``--builderOptimizationLevel`` and
    ``--skipInference`` from 8.6 (``--buildOnly`` before), no precision flags from 11 (the
    graph carries its precision). Unknown version: the TensorRT 10 form (JetPack 6).
    """
    options = options or TensorRTOptions()
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"TensorRT precision {precision!r} is not one of fp32, fp16, int8")
    version = _version_tuple(trt_version) or (10,)
    argv = [
        trtexec,
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={input_name}:{_shape(options.min_batch, input_chw)}",
        f"--optShapes={input_name}:{_shape(options.opt_batch, input_chw)}",
        f"--maxShapes={input_name}:{_shape(options.max_batch, input_chw)}",
    ]
    if version >= (8, 4):
        argv.append(f"--memPoolSize=workspace:{options.workspace_mib}")  # MiB
    else:
        argv.append(f"--workspace={options.workspace_mib}")
    if version < STRONGLY_TYPED_ONLY and precision == "fp16":
        argv.append("--fp16")
    elif version < STRONGLY_TYPED_ONLY and precision == "int8":
        argv += ["--int8", "--fp16"]  # Q/DQ layers in INT8, the rest may use FP16
    if options.timing_cache:
        cache = Path(engine_path).parent / options.timing_cache
        argv.append(f"--timingCacheFile={cache}")
    if version >= (8, 6):
        argv.append(f"--builderOptimizationLevel={options.builder_optimization_level}")
    if build_only:
        argv.append("--skipInference" if version >= (8, 6) else "--buildOnly")
    return argv


def build_settings(
    precision: str, input_chw: tuple[int, int, int], options: TensorRTOptions
) -> dict[str, Any]:
    """What the manifest of a TensorRT artifact records about how to build its engine."""
    return {
        "precision": precision,
        "input_chw": list(input_chw),
        "profile": {"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
        "workspace_mib": options.workspace_mib,
        "timing_cache": options.timing_cache,
        "builder_optimization_level": options.builder_optimization_level,
        "int8_source": "explicit Q/DQ graph (S8S8 symmetric, per-channel weights)"
        if precision == "int8"
        else None,
        "trtexec": trtexec_command("model.onnx", ENGINE_FILE, precision, input_chw, options),
        "trtexec_tensorrt11": trtexec_command(
            "model.onnx", ENGINE_FILE, precision, input_chw, options, trt_version="11.0"
        ),
    }


def graph_precision(onnx_path: Path) -> str:
    """The precision an ONNX graph carries: int8 (Q/DQ nodes), fp16 (FP16 weights) or fp32."""
    model = load_onnx(onnx_path)
    ops = {node.op_type for node in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    if any(init.data_type == 10 for init in model.graph.initializer):  # TensorProto.FLOAT16
        return "fp16"
    return "fp32"


def check_graph_precision(onnx_path: Path, precision: str, strongly_typed: bool) -> None:
    """Refuse a build whose graph cannot give ``precision``.

    Strongly typed builds (TensorRT 11) take the graph's precision as it is; weakly typed ones
    (up to 10.x) may also turn an FP32 graph into an FP16 engine with the FP16 flag.
    """
    carried = graph_precision(onnx_path)
    if carried == precision:
        return
    flag_may_lower = not strongly_typed and carried == "fp32" and precision == "fp16"
    if flag_may_lower:
        return
    why = " (this TensorRT builds strongly typed: precision comes from the graph)"
    raise ExportError(
        f"{onnx_path} is a {carried} graph, which cannot build a {precision} engine"
        f"{why if strongly_typed else ''}; use the tensorrt-{precision} artifact's model.onnx"
    )


def current_gpu() -> dict[str, str]:
    """Name and compute capability of CUDA device 0 (via torch), or raise a typed error."""
    import torch

    if not torch.cuda.is_available():
        raise ExportError("no CUDA device is visible: TensorRT engines need an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def onnx_to_tensorrt(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    input_chw: tuple[int, int, int],
    options: TensorRTOptions | None = None,
    input_name: str = "input",
) -> dict[str, Any]:
    """Build and serialise an engine with the TensorRT Python API; returns what to record.

    ``onnx_path`` must carry ``precision`` (:func:`graph_precision`): the FP16 graph for FP16,
    the Q/DQ graph for INT8. TensorRT up to 10.x also gets the FP16/INT8 builder flags (the
    layers outside Q/DQ may then run in FP16); TensorRT 11 builds strongly typed. The profile
    covers min/opt/max batch; the workspace pool is limited; the timing cache is read if present
    and written back after the build.
    """
    trt = _trt()
    options = options or TensorRTOptions()
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"TensorRT precision {precision!r} is not one of fp32, fp16, int8")
    weakly_typed = hasattr(trt.BuilderFlag, "FP16")  # gone in TensorRT 11
    check_graph_precision(Path(onnx_path), precision, strongly_typed=not weakly_typed)
    gpu = current_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, logger, Path(onnx_path), weakly_typed)
    config = _builder_config(trt, builder, precision, weakly_typed, options)
    _add_profile(builder, config, input_name, input_chw, options)
    cache_path = Path(engine_path).parent / options.timing_cache if options.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build a {precision} engine from {onnx_path}")
    Path(engine_path).parent.mkdir(parents=True, exist_ok=True)
    Path(engine_path).write_bytes(bytes(serialized))
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt_version": trt.__version__,
        **gpu,
        "precision": precision,
        "strongly_typed": not weakly_typed,
    }


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, weakly_typed: bool) -> Any:
    """The network TensorRT's ONNX parser reads from ``onnx_path`` (strongly typed from 11)."""
    flags = 0 if weakly_typed else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    return network


def _builder_config(
    trt: Any, builder: Any, precision: str, weakly_typed: bool, options: TensorRTOptions
) -> Any:
    """The builder config: the workspace limit, the optimisation level, precision flags (<11)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.builder_optimization_level
    if weakly_typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if weakly_typed and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    return config


def _add_profile(
    builder: Any,
    config: Any,
    input_name: str,
    input_chw: tuple[int, int, int],
    options: TensorRTOptions,
) -> None:
    """The optimisation profile over the min/opt/max batch."""
    profile = builder.create_optimization_profile()
    profile.set_shape(
        input_name,
        (options.min_batch, *input_chw),
        (options.opt_batch, *input_chw),
        (options.max_batch, *input_chw),
    )
    config.add_optimization_profile(profile)


def check_engine_compatible(recorded: dict[str, Any], tensorrt_version: str, gpu: str) -> None:
    """Refuse an engine built for another GPU or TensorRT version, telling the user to rebuild."""
    built_version = recorded.get("tensorrt_version")
    built_gpu = recorded.get("gpu")
    if built_version is None or built_gpu is None:
        raise EngineMismatchError(
            "the engine's manifest does not record the TensorRT version and GPU it was built "
            "for; rebuild the engine on this machine (onnx_to_tensorrt or trtexec)"
        )
    if built_version != tensorrt_version or built_gpu != gpu:
        raise EngineMismatchError(
            f"this engine was built for {built_gpu} with TensorRT {built_version}, but this "
            f"machine has {gpu} with TensorRT {tensorrt_version}; engines do not move between "
            "GPUs or TensorRT versions: rebuild it here from the artifact's ONNX with the "
            "trtexec command in its manifest"
        )


def load_engine(engine_path: Path, recorded: dict[str, Any]) -> Any:
    """Deserialise an engine after :func:`check_engine_compatible` passed on this machine."""
    trt = _trt()
    check_engine_compatible(recorded, trt.__version__, current_gpu()["gpu"])
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise EngineMismatchError(
            f"TensorRT could not deserialise {engine_path}; rebuild the engine on this machine"
        )
    return engine


def run_engine(engine: Any, images: Any, input_name: str = "input") -> Any:
    """Logits of ``images`` (numpy NCHW float32) through an engine, using torch CUDA buffers."""
    import numpy as np
    import torch

    context = engine.create_execution_context()
    output_name = next(
        engine.get_tensor_name(i)
        for i in range(engine.num_io_tensors)
        if engine.get_tensor_name(i) != input_name
    )
    dtype = _trt().nptype(engine.get_tensor_dtype(input_name))  # uint8 for raw-image inputs
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=dtype)).cuda()
    context.set_input_shape(input_name, tuple(batch.shape))
    out = torch.empty(tuple(context.get_tensor_shape(output_name)), device="cuda")
    context.set_tensor_address(input_name, batch.data_ptr())
    context.set_tensor_address(output_name, out.data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise ExportError("TensorRT execution failed")
    stream.synchronize()
    return out.cpu().numpy()
