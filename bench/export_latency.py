"""Latency, throughput and accuracy of the exported students on this CPU.

For the digits and Fashion-MNIST students: PyTorch eager FP32, ONNX Runtime FP32 and INT8,
OpenVINO FP32, FP16 and INT8, following the protocol in docs/DESIGN.md: every candidate warmed up by
time, then batch-1 latency (p50/p90/p99) timed in interleaved rounds, batch-64 throughput the
same way, test top-1 on the full test split and top-1 agreement with the PyTorch FP32 student.
Prints a markdown table with the command, the machine and the date.

    python -m bench.export_latency                       # trains what it needs into runs/
    python -m bench.export_latency --fashion-checkpoint runs/fmnist/checkpoint.pt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import command_line
from export.config import ExportConfig
from export.exporter import export_checkpoint
from export.extract import extract_branch
from export.timing import cpu_name, interleaved

ROOT = Path(__file__).resolve().parents[1]


def train_student(dataset: str, out: Path, epochs: int, limit_train: int | None) -> Path:
    """A short ONE run of ``configs/<dataset>-one.yaml`` (reused when already there)."""
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        return checkpoint
    import yaml

    from training.config import TrainingConfig
    from training.trainer import train

    raw = yaml.safe_load((ROOT / "configs" / f"{dataset}-one.yaml").read_text())
    data = {key: raw[key] for key in TrainingConfig.model_fields if key in raw}
    data.setdefault("train", {}).update({"epochs": epochs, "progress": False})
    data.setdefault("method", {})["rampup_epochs"] = max(1, epochs // 3)
    if limit_train:
        data.setdefault("data", {})["limit_train"] = limit_train
    return train(TrainingConfig.model_validate(data), out).checkpoint


def candidates(export_dir: Path, checkpoint: Path, threads: int) -> dict[str, dict[str, Any]]:
    """name -> {run: images -> logits, bind: images -> timed zero-argument call, ...}.

    Every timed call is what an application makes: the runtime's own call on a float32 NCHW
    array (PyTorch gets the tensor viewing that array, made once).
    """
    import onnxruntime as ort
    import openvino as ov
    import torch

    torch.set_num_threads(threads)
    module = extract_branch(checkpoint).module.eval()

    def torch_run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    def torch_bind(x: np.ndarray) -> Any:
        tensor = torch.from_numpy(x)

        def call() -> None:
            with torch.inference_mode():
                module(tensor)

        return call

    out: dict[str, dict[str, Any]] = {
        "pytorch-fp32": {
            "run": torch_run,
            "bind": torch_bind,
            "runtime": f"torch {torch.__version__.split('+')[0]} eager",
            "precision": "f32",
        }
    }
    onnx_variants = (
        ("ort-fp32", "onnx-fp32", "f32"),
        ("ort-int8", "onnx-int8", "int8, recipe chosen on this CPU"),
        ("ort-tensorrt-qdq", "tensorrt-int8", "int8 S8S8 symmetric Q/DQ (the TensorRT graph)"),
    )
    for name, folder, precision in onnx_variants:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(export_dir / folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

        def ort_bind(x: np.ndarray, s: Any = session) -> Any:
            return lambda: s.run(None, {"input": x})

        out[name] = {
            "run": lambda x, s=session: s.run(None, {"input": x})[0],
            "bind": ort_bind,
            "runtime": f"onnxruntime {ort.__version__}",
            "precision": precision,
        }
    core = ov.Core()
    variants = [
        ("openvino-fp32", "openvino-fp32", "f32"),
        ("openvino-fp32-auto", "openvino-fp32", None),
        ("openvino-fp16", "openvino-fp16", None),
        ("openvino-int8", "openvino-int8", None),
    ]
    for name, folder, hint in variants:
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        compiled = core.compile_model(str(export_dir / folder / "model.xml"), "CPU", config)
        request = compiled.create_infer_request()
        used = compiled.get_property("INFERENCE_PRECISION_HINT")
        used = getattr(used, "get_type_name", lambda u=used: str(u))()

        def ov_run(x: np.ndarray, r: Any = request) -> np.ndarray:
            return np.array(r.infer({0: x})[0])

        def ov_bind(x: np.ndarray, c: Any = compiled) -> Any:
            # infer() copies the input into the request. Bound input tensors (set_input_tensor)
            # are avoided: with one stream, OpenVINO 2026.4 let another request of the same
            # compiled model write into a bound tensor's memory (seen here: the data changed,
            # and a longer run aborted with a corrupted heap)
            bound = c.create_infer_request()
            return lambda: bound.infer({0: x})

        weights = folder.split("-")[1]
        out[name] = {
            "run": ov_run,
            "bind": ov_bind,
            "runtime": f"openvino {ov.get_version().split('-')[0]}",
            "precision": f"{weights} IR, {used} compute"
            if weights != "int8"
            else f"int8 IR, other ops {used}",
        }
    return out


def accuracy(run: Any, images: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> dict:
    logits = np.concatenate([run(images[i : i + 64]) for i in range(0, len(images), 64)])
    return {
        "top1": float(np.mean(logits.argmax(1) == labels)),
        "agreement": float(np.mean(logits.argmax(1) == ref.argmax(1))),
        "max_abs_diff": float(np.abs(logits - ref).max()),
    }


def bench_dataset(name: str, checkpoint: Path, out: Path, args: argparse.Namespace) -> dict:
    # the figures compare runtimes on the same normalised float32 NCHW input, as recorded in
    # docs/BENCHMARKS.md; the preprocessing the artifacts embed by default is left out
    settings = ExportConfig(
        formats="onnx,openvino,tensorrt", threads=args.threads, embed_preprocessing=False
    )
    result = export_checkpoint(checkpoint, out / "export", settings)
    data = np.load(result.eval_file)
    images, labels, ref = data["images"], data["labels"], data["reference_logits"]
    runs = candidates(result.out_dir, checkpoint, args.threads)
    one = np.array(images[:1], copy=True)
    batch = np.array(images[:64], copy=True)
    if len(batch) < 64:
        batch = np.ascontiguousarray(np.resize(images, (64, *images.shape[1:])))
    # candidates are interleaved within each runtime; the runtimes are timed one after the
    # other, so one runtime's worker threads do not disturb another's timings
    groups: dict[str, list[str]] = {}
    for key in runs:
        groups.setdefault(key.split("-")[0], []).append(key)
    b1: dict[str, Any] = {}
    b64: dict[str, Any] = {}
    for members in groups.values():
        for x, out_times, min_calls in ((one, b1, 200), (batch, b64, 50)):
            out_times.update(
                interleaved(
                    {k: runs[k]["bind"](x) for k in members},
                    batch=len(x),
                    warmup_s=args.warmup,
                    min_seconds=args.seconds,
                    min_calls=min_calls,
                    rounds=args.rounds,
                )
            )
    rows = []
    for key, value in runs.items():
        rows.append(
            {
                "candidate": key,
                "runtime": value["runtime"],
                "precision": value["precision"],
                "b1": b1[key].to_dict(),
                "b64": b64[key].to_dict(),
                **accuracy(value["run"], images, labels, ref),
            }
        )
    search = result.artifact("onnx-int8").extra["ort_int8_search"]
    return {
        "dataset": name,
        "checkpoint": str(checkpoint),
        "input": list(images.shape[1:]),
        "test_images": len(images),
        "student": result.student,
        "rows": rows,
        "ort_int8_search": search,
        "openvino_int8": result.artifact("openvino-int8").extra["openvino"],
    }


def machine() -> str:
    return f"{cpu_name()}, {platform.system()} {platform.machine()}"


def table(report: dict) -> str:
    rows = {r["candidate"]: r for r in report["rows"]}
    student = report["student"]["student"]
    lines = [
        f"### {report['dataset']}: input {'x'.join(map(str, report['input']))}, "
        f"{report['test_images']} test images, student {student['parameters']:,} parameters, "
        f"{student['macs']:,} MACs",
        "",
        "| candidate | runtime | precision | b1 p50 ms | b1 p90 ms | b1 p99 ms | b1 vs FP32 | "
        "b64 img/s | top-1 | agreement | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {"ort": "ort-fp32", "openvino": "openvino-fp32", "pytorch": "pytorch-fp32"}
    for name, row in rows.items():
        family = name.split("-")[0]
        ratio = row["b1"]["p50_ms"] / rows[base[family]]["b1"]["p50_ms"]
        lines.append(
            f"| {name} | {row['runtime']} | {row['precision']} | {row['b1']['p50_ms']:.3f} | "
            f"{row['b1']['p90_ms']:.3f} | {row['b1']['p99_ms']:.3f} | {ratio:.2f}x | "
            f"{row['b64']['throughput_ips']:,.0f} | {row['top1'] * 100:.2f}% | "
            f"{row['agreement'] * 100:.2f}% | {row['max_abs_diff']:.2g} |"
        )
    lines += ["", *bars(rows)]
    search = report["ort_int8_search"]
    lines += [
        "",
        f"ONNX Runtime INT8 recipe search (batch 1, {search['validation_images']} validation "
        f"images): chosen **{search['chosen']}**; {search['rule']}.",
        "",
        "| recipe | p50 ms | vs FP32 | val top-1 |",
        "|---|---|---|---|",
    ]
    for m in search["measurements"]:
        lines.append(
            f"| {m['candidate']} | {m['p50_ms']:.3f} | {m['ratio_to_fp32']:.2f}x | "
            f"{m['val_top1'] * 100:.2f}% |"
        )
    return "\n".join(lines)


def bars(rows: dict[str, dict]) -> list[str]:
    """The acceptance bars, computed from this run's rows."""

    def p50(name: str) -> float:
        return rows[name]["b1"]["p50_ms"]

    def ips(name: str) -> float:
        return rows[name]["b64"]["throughput_ips"]

    fp32_top1 = rows["pytorch-fp32"]["top1"]
    changes = ", ".join(
        f"{name} {(rows[name]['top1'] - fp32_top1) * 100:+.2f}"
        for name in ("ort-int8", "openvino-int8", "ort-tensorrt-qdq")
    )
    return [
        f"- OpenVINO INT8 / FP32 batch-1 p50: {p50('openvino-int8') / p50('openvino-fp32'):.2f}x "
        f"against FP32 computed in f32, {p50('openvino-int8') / p50('openvino-fp32-auto'):.2f}x "
        "against the FP32 IR in the runtime's default precision; batch-64 throughput "
        f"{ips('openvino-int8') / ips('openvino-fp32'):.2f}x the f32 one",
        f"- ONNX Runtime INT8 / FP32 batch-1 p50: {p50('ort-int8') / p50('ort-fp32'):.2f}x; "
        f"batch-64 throughput {ips('ort-int8') / ips('ort-fp32'):.2f}x",
        f"- INT8 test top-1 minus the PyTorch FP32 student's (points): {changes}",
        f"- ONNX Runtime FP32 / OpenVINO FP32 (f32) against PyTorch: max |diff| "
        f"{rows['ort-fp32']['max_abs_diff']:.2g} / {rows['openvino-fp32']['max_abs_diff']:.2g}, "
        f"agreement {rows['ort-fp32']['agreement']:.2%} / {rows['openvino-fp32']['agreement']:.2%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-export")
    parser.add_argument("--digits-checkpoint", type=Path)
    parser.add_argument("--fashion-checkpoint", type=Path)
    parser.add_argument("--digits-epochs", type=int, default=15)
    parser.add_argument("--fashion-epochs", type=int, default=4)
    parser.add_argument("--fashion-limit-train", type=int, help="train on this many images")
    parser.add_argument("--skip-fashion", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per candidate")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per candidate")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    jobs = [("digits", args.digits_checkpoint, args.digits_epochs, None)]
    if not args.skip_fashion:
        jobs.append(
            (
                "fashion-mnist",
                args.fashion_checkpoint,
                args.fashion_epochs,
                args.fashion_limit_train,
            )
        )
    reports = []
    for name, checkpoint, epochs, limit in jobs:
        out = args.out / name
        checkpoint = checkpoint or train_student(name, out / "train", epochs, limit)
        reports.append(bench_dataset(name, Path(checkpoint), out, args))

    import onnxruntime
    import openvino
    import torch

    command = command_line()
    header = [
        "## Export latency (bench/export_latency.py)",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}; threads used: {args.threads}",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"openvino {openvino.get_version().split('-')[0]}",
        "- protocol: warm-up >= 1 s per candidate, then >= 200 calls and >= "
        f"{args.seconds:g} s per candidate in {args.rounds} interleaved rounds; the candidates "
        "of one runtime are interleaved with each other, the runtimes timed one after the "
        "other; batch-64 the same way (>= 50 calls); accuracy on the full test split; "
        "agreement = top-1 equal to the PyTorch FP32 student's; 'b1 vs FP32' = p50 over the "
        "same runtime's FP32 p50",
        "- openvino-fp32 runs with INFERENCE_PRECISION_HINT=f32; openvino-fp32-auto, -fp16 and "
        "-int8 with the runtime's default precision on this CPU (column 'precision')",
        f"- load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}: "
        "other processes on this machine add to tail latencies (p99) more than to p50",
    ]
    text = "\n".join(header + [""] + ["\n\n".join(table(r) for r in reports)]) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_latency.json").write_text(json.dumps(reports, indent=2, default=str))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
