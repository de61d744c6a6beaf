"""Where OpenVINO INT8 pays off on this CPU: batch-1 latency of INT8 against FP32 by network width.

Builds the deployed single-branch ResNet-20 student at several width multipliers (1x28x28 input,
Fashion-MNIST shape), exports each to ONNX and OpenVINO FP32 (f32 compute) and INT8 (NNCF PTQ,
calibrated on real Fashion-MNIST training images), and times FP32 and INT8 interleaved in one
process. Accuracy is not the point here (the networks are untrained): only latency.

    python -m bench.openvino_int8_width --widths 1 2 4
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bench.host import command_line
from export.onnx import torch_to_onnx
from export.openvino import compile_openvino, read_onnx_as_openvino
from export.quantize import quantize_openvino
from export.timing import cpu_name, interleaved
from training.config import DataConfig, ModelConfig
from training.data import load_data, to_numpy
from training.models import build_model, count_macs, count_parameters

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = load_data(DataConfig(name="fashion-mnist", calibration_size=300))
    calibration, _ = to_numpy(splits.calibration)
    image = calibration[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            cfg = ModelConfig(name="resnet20", branches=1, width=width)
            student = build_model(cfg, num_classes=10, in_channels=1, image_size=28).extract(0)
            onnx_path = torch_to_onnx(
                student, Path(tmp) / f"w{width}.onnx", torch.from_numpy(image)
            )
            fp32 = read_onnx_as_openvino(onnx_path)
            int8, _ = quantize_openvino(read_onnx_as_openvino(onnx_path), calibration)
            compiled = {
                "fp32": compile_openvino(fp32, threads=args.threads, exact_f32=True),
                "int8": compile_openvino(int8, threads=args.threads, exact_f32=False),
            }
            calls = {k: (lambda c=c: c(image)) for k, c in compiled.items()}
            lat = interleaved(calls, min_seconds=args.seconds, rounds=5)
            macs = count_macs(student, (1, 1, 28, 28))
            rows.append((width, count_parameters(student), macs, lat["fp32"], lat["int8"]))
            print(
                f"width {width}: fp32 {lat['fp32'].p50:.3f} ms, int8 {lat['int8'].p50:.3f} ms",
                flush=True,
            )
    print(f"\nCommand: `{command_line()}`")
    print(
        f"Machine: {cpu_name()}, {args.threads} threads; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print("\n| width | channels | parameters | MMACs | FP32 p50 ms | INT8 p50 ms | INT8 / FP32 |")
    print("|---|---|---|---|---|---|---|")
    for width, params, macs, f, i in rows:
        ch = "-".join(str(int(round(c * width))) for c in (16, 32, 64))
        print(
            f"| {width:g} | {ch} | {params:,} | {macs / 1e6:.1f} | {f.p50:.3f} | "
            f"{i.p50:.3f} | {i.p50 / f.p50:.2f}x |"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
