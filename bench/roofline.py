"""This CPU's matrix-multiply peak in FP32, BF16 and INT8, and how close an artifact gets to it.

The peak is a MatMul ([M, K] by [K, N]; 64x1024 by 1024x1024 and 128x512 by 512x512, the
better of the two) compiled by
OpenVINO on the CPU with a fixed thread count: in f32 (``INFERENCE_PRECISION_HINT=f32``), in
bf16, and in INT8 (FakeQuantize on both operands, which OpenVINO's low-precision transformations
turn into a u8 x i8 MatMul with VNNI). Its MACs per call divided by the p50 call time is the
peak a convolutional network of the same precision can approach. The calls are kept short
(0.1-0.7 ms) on purpose: on a shared machine a long call is often preempted, which drags the p50
of a 256x1024x1024 MatMul far below what the core does (measured: 34 against 110 GMAC/s). An artifact's achieved rate
is its MACs per image times the batch divided by its p50 latency.

    python -m bench.roofline --threads 1          # prints the three peaks

``bench.vendor_crosscheck`` measures the peaks in the same process as the artifacts and
reports every artifact's fraction of the peak of its precision.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from targets import runner

ROOT = Path(__file__).resolve().parents[1]

SHAPE = (64, 1024, 1024)  # M, K, N
SHAPES = ((64, 1024, 1024), (128, 512, 512))
# which measured peak an artifact is held against: (format, precision) -> peak name
PEAK_FOR = {
    ("openvino", "fp32"): "fp32",  # the runner asks for f32 inference
    ("openvino", "fp16"): "bf16",  # without the f32 hint this CPU computes FP16 IR in bf16
    ("openvino", "int8"): "int8",
    ("onnx", "fp32"): "fp32",
    ("onnx", "fp16"): "fp32",  # ONNX Runtime's CPU kernels compute FP16 graphs in FP32
    ("onnx", "int8"): "int8",
}


def matmul_model(shape: tuple[int, int, int] = SHAPE, int8: bool = False) -> Any:
    """An OpenVINO model computing [M, K] x [K, N]; with ``int8`` both operands pass through
    FakeQuantize (activations u8 on [0, 4], weights symmetric i8), so the CPU runs it in INT8."""
    import openvino as ov
    from openvino import opset13 as ops

    m, k, n = shape
    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], ov.Type.f32, name="x")
    w = ops.constant(rng.standard_normal((n, k)).astype(np.float32) * 0.05)
    a, b = x, w
    if int8:
        lo, hi = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
        a = ops.fake_quantize(x, lo, hi, lo, hi, 256)
        edge = float(np.abs(w.get_data()).max())
        wl, wh = ops.constant(np.float32(-edge)), ops.constant(np.float32(edge))
        b = ops.fake_quantize(w, wl, wh, wl, wh, 255)
    out = ops.matmul(a, b, transpose_a=False, transpose_b=True)
    return ov.Model([out], [x], "matmul-int8" if int8 else "matmul")


def compile_peak(precision: str, threads: int, shape: tuple[int, int, int] = SHAPE) -> Any:
    import openvino as ov

    config: dict[str, Any] = {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads}
    config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
    return ov.Core().compile_model(matmul_model(shape, int8=precision == "int8"), "CPU", config)


def runtime_precisions(compiled: Any) -> list[str]:
    """The precisions the CPU plugin chose for the MatMul (or the FullyConnected it became)."""
    found = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in ("MatMul", "FullyConnected", "Gemm"):
            found.append(f"{kind} {info['primitiveType'].astype(str)}")
    return found


def measure_peak(
    precision: str, threads: int, seconds: float = 1.5, shape: tuple[int, int, int] = SHAPE
) -> dict[str, Any]:
    """GMAC/s of the big MatMul in ``precision`` (fp32, bf16, int8) on ``threads`` threads."""
    import openvino as ov

    compiled = compile_peak(precision, threads, shape)
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).uniform(0, 4, shape[:2]).astype(np.float32)
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))
    runner.timed_loop(lambda r: r.infer(), [request], 0.3, 3)  # warm-up
    times, _ = runner.timed_loop(lambda r: r.infer(), [request], seconds, 10)
    p50 = float(np.median(times))
    macs = shape[0] * shape[1] * shape[2]
    return {
        "precision": precision,
        "threads": threads,
        "shape": list(shape),
        "macs": macs,
        "p50_ms": p50 * 1e3,
        "gmacs": macs / p50 / 1e9,
        "runtime": runtime_precisions(compiled),
        "calls": len(times),
    }


def measure_peaks(threads: int, seconds: float = 1.0) -> dict[str, dict[str, Any]]:
    """The best of :data:`SHAPES` for each precision."""
    out = {}
    for precision in ("fp32", "bf16", "int8"):
        runs = [measure_peak(precision, threads, seconds, shape) for shape in SHAPES]
        out[precision] = max(runs, key=lambda run: run["gmacs"])
    return out


def achieved(macs_per_image: int, batch: int, p50_s: float, peak_gmacs: float) -> dict:
    """Achieved GMAC/s of one call of ``batch`` images taking ``p50_s``, and its peak share."""
    gmacs = macs_per_image * batch / p50_s / 1e9
    return {"gmacs": gmacs, "fraction": gmacs / peak_gmacs if peak_gmacs else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for name, peak in measure_peaks(args.threads, args.seconds).items():
        print(
            f"{name}: {peak['gmacs']:.1f} GMAC/s ({peak['p50_ms']:.2f} ms per "
            f"{peak['shape']} MatMul, {args.threads} threads; {', '.join(peak['runtime'])})"
        )


if __name__ == "__main__":
    main()
