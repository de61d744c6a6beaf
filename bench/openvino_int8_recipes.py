"""OpenVINO INT8 recipes for one student at batch 1: what each option does to INT8/FP32.

Builds the student's FP32 IR and INT8 IRs from its checkpoint the way the exporter does
(ONNX of the body, NNCF post-training quantisation on batches of 32 calibration images,
preprocessing embedded afterwards, batch axis fixed to 1), one INT8 IR per recipe variant
(one NNCF option changed from the shipped recipe), and one compile-config variant of the
shipped INT8 IR. Each is scored on the test split (top-1, raw images through the embedded
preprocessing) and timed at batch 1 with the runner's OpenVINO settings (``NUM_STREAMS=1``,
``INFERENCE_NUM_THREADS``, ``f32`` for FP32, zero-copy bound input), in interleaved rounds in
one process; the ratio is the median over rounds of INT8 p50 / FP32 p50 of the same round.

``--layers`` adds where the time goes: the runtime's per-layer counters (``PERF_COUNT``) of the
FP32 and shipped INT8 IRs summed per stage (convolutions by output channels), the rest of the
call, and the precision every executed node ran in (an FP32 island in front of the INT8 graph
would show here).

    python -m bench.openvino_int8_recipes --checkpoint runs/fm/train/checkpoint.pt \\
        --threads 1 --rounds 8 --layers --markdown /tmp/recipes.md
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import machine

ROOT = Path(__file__).resolve().parents[1]

NNCF_VARIANTS = {
    "shipped": "the exporter's recipe: preset PERFORMANCE, CPU, every batch of 32 (300 images)",
    "mixed": "preset MIXED (asymmetric activations)",
    "no-stem": "first convolution (1 input channel) left in FP32 (ignored scope)",
    "no-fc": "classifier (MatMul) left in FP32 (ignored scope)",
    "no-stem-fc": "first convolution and classifier left in FP32",
    "overflow-off": "overflow fix disabled (8-bit weights in the first layer too)",
    "slow-bias": "fast_bias_correction=False (full bias correction)",
    "subset-100": "calibration on the first 100 images (4 batches)",
    "cpu-spr": "target device CPU_SPR (NNCF's scheme for Sapphire Rapids CPUs)",
    "any-device": "target device ANY (NNCF's device-agnostic scheme)",
}
COMPILE_VARIANTS = {
    "pinned": ({"ENABLE_CPU_PINNING": True}, "shipped IR, threads pinned to cores"),
    "latency-hint": ({"PERFORMANCE_HINT": "LATENCY"}, "shipped IR, PERFORMANCE_HINT=LATENCY"),
    "f32-hint": ({"INFERENCE_PRECISION_HINT": "f32"}, "shipped IR, non-INT8 parts in f32"),
    "denormals": ({"CPU_DENORMALS_OPTIMIZATION": True}, "shipped IR, denormals flushed to zero"),
}


def nncf_options(name: str, body: Any, items: list[np.ndarray]) -> tuple[dict, list]:
    """NNCF quantize() arguments of one variant, and the calibration items it uses."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    ops = list(body.get_ordered_ops())
    convs = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    matmuls = [op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul"]
    options: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.PERFORMANCE,
        "target_device": nncf.TargetDevice.CPU,
    }
    ignored = {"no-stem": convs[:1], "no-fc": matmuls, "no-stem-fc": convs[:1] + matmuls}
    if name in ignored:
        options["ignored_scope"] = nncf.IgnoredScope(names=ignored[name])
    elif name == "mixed":
        options["preset"] = nncf.QuantizationPreset.MIXED
    elif name == "overflow-off":
        options["advanced_parameters"] = AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.DISABLE
        )
    elif name == "slow-bias":
        options["fast_bias_correction"] = False
    elif name == "subset-100":
        items = items[:4]
    elif name == "cpu-spr":
        options["target_device"] = nncf.TargetDevice.CPU_SPR
    elif name == "any-device":
        options["target_device"] = nncf.TargetDevice.ANY
    options["subset_size"] = len(items)
    return options, items


def build(checkpoint: Path, work: Path, variants: list[str], calibration_size: int) -> dict:
    """FP32 and INT8 static batch-1 IRs of the checkpoint's student; the test split."""
    import nncf
    import openvino as ov
    import torch

    from export.config import ExportConfig
    from export.exporter import resolve_branches
    from export.extract import extract_branch
    from export.onnx import torch_to_onnx
    from export.openvino import reshape_static, save_openvino
    from export.preprocess import InputContract, embed_openvino
    from export.splits import raw_dtype, split_images
    from training.checkpoint import load_checkpoint
    from training.data import load_data

    nncf.set_log_level(logging.ERROR)
    settings = ExportConfig(formats=["openvino"], calibration_size=calibration_size)
    loaded = load_checkpoint(checkpoint)
    splits = load_data(loaded.config.data)
    contract = InputContract.for_spec(loaded.spec, True, settings.input_layout, raw_dtype(splits))
    cal = split_images(splits, "calibration", contract, calibration_size)
    val = split_images(splits, "val", contract)
    test = split_images(splits, "test", contract, None)
    branch = resolve_branches(settings, loaded)[0][0]
    student = extract_branch(loaded, branch, images=val.normalised[:256])
    onnx_path = torch_to_onnx(
        student.module, work / "body.onnx", torch.from_numpy(cal.normalised[:1]),
        opset=settings.opset,
    )  # fmt: skip
    items = [
        np.ascontiguousarray(cal.normalised[i : i + 32], dtype=np.float32)
        for i in range(0, len(cal.normalised), 32)
    ]
    core, paths = ov.Core(), {}
    for name in ["fp32", *variants]:
        body = core.read_model(str(onnx_path))
        seconds = time.perf_counter()
        if name != "fp32":
            options, used = nncf_options(name, body, items)
            body = nncf.quantize(body, nncf.Dataset(used), **options)
        xml = work / name / "model.xml"
        save_openvino(body, xml, compress_to_fp16=False)
        embed_openvino(xml, contract, compress_to_fp16=False)
        reshape_static(xml, work / name / "b1.xml", batch=1)
        paths[name] = work / name / "b1.xml"
        print(f"built {name} in {time.perf_counter() - seconds:.1f} s", flush=True)
    return {"paths": paths, "images": test.inputs, "labels": test.labels}


def compile_ir(path: Path, fp32: bool, threads: int, extra: dict | None = None) -> Any:
    """Compiled as the runner compiles for validation, plus ``extra``."""
    import openvino as ov

    config: dict[str, Any] = {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads}
    if fp32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(str(path), "CPU", {**config, **(extra or {})})


def top1(compiled: Any, images: np.ndarray, labels: np.ndarray) -> float:
    request = compiled.create_infer_request()
    hits = 0
    for i in range(len(images)):
        request.infer({0: images[i : i + 1]})
        hits += int(request.get_output_tensor(0).data.argmax() == labels[i])
    return hits / len(images)


def interleaved(requests: dict[str, Any], rounds: int, seconds: float) -> dict[str, list[float]]:
    """Per round and candidate, the median batch-1 call in us (50 warm-up calls per turn); the
    order of the candidates turns by one each round, so none always follows the same one."""
    clock, out = time.perf_counter, defaultdict(list)
    names = list(requests)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            request = requests[name]
            for _ in range(50):
                request.infer()
            times, start = [], clock()
            while clock() - start < seconds:
                t0 = clock()
                request.infer()
                times.append(clock() - t0)
            out[name].append(statistics.median(times) * 1e6)
    return dict(out)


def layer_profile(compiled: Any, x: np.ndarray, calls: int = 500) -> dict[str, Any]:
    """Per-layer median time from the runtime's counters (whole microseconds), convolutions
    summed by output channels and the other executed layers by type; the precision every
    executed node ran in."""
    import openvino as ov

    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))
    for _ in range(100):
        request.infer()
    samples: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, str] = {}
    for _ in range(calls):
        request.infer()
        for info in request.profiling_info:
            samples[info.node_name].append(info.real_time.total_seconds() * 1e6)
            kinds[info.node_name] = info.node_type
    # the median call of each layer: a shared machine preempts some calls, means drift with it
    per_node = {name: statistics.median(times) for name, times in samples.items()}
    shapes, precisions = {}, defaultdict(int)
    for node in compiled.get_runtime_model().get_ordered_ops():
        rt = node.get_rt_info()
        kind = rt["layerType"].astype(str)
        if kind not in ("Const", "Reshape", "Input", "Output"):
            precisions[f"{kind} {rt['runtimePrecision'].astype(str)}"] += 1
        if kind == "Convolution":
            shape = node.get_output_partial_shape(0)
            shapes[node.get_friendly_name()] = f"conv {shape[1]}ch {shape[2]}x{shape[3]}"
    stages: dict[str, float] = defaultdict(float)
    for name, seconds in per_node.items():
        stage = shapes.get(name) or kinds[name].replace("QuantizedLegacy", "")
        if seconds > 0.05 or name in shapes:
            stages[stage] += seconds
    return {"stages": dict(stages), "precisions": dict(precisions)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(NNCF_VARIANTS))
    parser.add_argument("--compile-variants", nargs="*", default=list(COMPILE_VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--calibration-size", type=int, default=300)
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    import openvino as ov
    import torch

    torch.set_num_threads(args.threads)
    unknown = set(args.variants) - set(NNCF_VARIANTS)
    unknown |= set(args.compile_variants) - set(COMPILE_VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: {sorted(NNCF_VARIANTS)}")
    variants = ["shipped", *(v for v in args.variants if v != "shipped")]
    with tempfile.TemporaryDirectory(prefix="int8-recipes-") as tmp:
        built = build(args.checkpoint, Path(tmp), variants, args.calibration_size)
        images, labels = built["images"], built["labels"]
        compiled = {
            name: compile_ir(path, name == "fp32", args.threads)
            for name, path in built["paths"].items()
        }
        for name in args.compile_variants:
            extra = COMPILE_VARIANTS[name][0]
            compiled[name] = compile_ir(built["paths"]["shipped"], False, args.threads, extra)
        accuracy = {name: top1(c, images, labels) for name, c in compiled.items()}
        x = np.ascontiguousarray(images[:1])
        requests = {}
        for name, c in compiled.items():
            requests[name] = c.create_infer_request()
            requests[name].set_input_tensor(ov.Tensor(x, shared_memory=True))
        rounds = interleaved(requests, args.rounds, args.seconds)
        layers = {}
        if args.layers:
            for name in ("fp32", "shipped"):
                path = built["paths"][name]
                c = compile_ir(path, name == "fp32", args.threads, {"PERF_COUNT": True})
                layers[name] = layer_profile(c, x)
    rows = []
    for name in compiled:
        ratios = [a / b for a, b in zip(rounds[name], rounds["fp32"], strict=True)]
        what = NNCF_VARIANTS.get(name) or COMPILE_VARIANTS.get(name, (None, "FP32 IR"))[1]
        rows.append({
            "variant": name, "what": what, "p50_us": statistics.median(rounds[name]),
            "ratio_to_fp32": statistics.median(ratios), "test_top1": accuracy[name],
        })  # fmt: skip
    lines = [
        f"Machine: {machine()}; {args.threads} thread(s), batch 1, static [1,...] IR; "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s.",
        "",
        "| variant | what changed | p50 us | INT8 / FP32 | test top-1 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['what']} | {r['p50_us']:.1f} | {r['ratio_to_fp32']:.3f}x "
            f"| {100 * r['test_top1']:.2f}% |"
        )
    if layers:
        names = sorted(set(layers["fp32"]["stages"]) | set(layers["shipped"]["stages"]))
        lines += ["", "| stage | FP32 us | INT8 us | INT8 / FP32 |", "|---|---|---|---|"]
        for stage in names:
            f, i = layers["fp32"]["stages"].get(stage, 0), layers["shipped"]["stages"].get(stage, 0)
            lines.append(f"| {stage} | {f:.1f} | {i:.1f} | {i / f if f else 0:.2f}x |")
        outside = [
            statistics.median(rounds[name]) - sum(layers[name]["stages"].values())
            for name in ("fp32", "shipped")
        ]
        lines.append(
            f"| outside the layers (p50 - counters) | {outside[0]:.1f} | {outside[1]:.1f} | |"
        )
        lines += ["", "Node precisions, shipped INT8: " + ", ".join(
            f"{k} x{v}" for k, v in sorted(layers["shipped"]["precisions"].items())
        )]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "rounds": rounds, "layers": layers}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
