"""INT8 top-1 drop of trained timm networks: hard-swish, SiLU and squeeze-excitation against ReLU.

For each listed architecture: train one network (vanilla, one branch, fresh weights, seed 0) on
``--train-images`` Fashion-MNIST images at 28x28 (the small-input rule: full-resolution stem)
for ``--epochs`` epochs with one torch thread, then export it with onedge's exporter (ONNX and
OpenVINO; FP32, INT8 with ONNX Runtime's two variants and NNCF) with every INT8 gate opened, so
that no INT8 graph is refused and each one's top-1 is measured. Top-1 of every artifact on the
same fixed test images (``--test-images`` of the export's test split), the INT8 drop in points
against the same network in PyTorch FP32 (which its ONNX and OpenVINO FP32 artifacts match), and
the INT8 top-1 agreement with it.
The activation and squeeze-excitation modules of each network are listed
(``pipeline.report.int8_care.activation_families``).

Every finished architecture is saved at once to ``--out/timm-int8.json``, so an interrupted run
resumes where it stopped; one process at a time:

    python -m bench.timm_int8 --train-images 4000 --epochs 3 --test-images 2000
    python -m bench.timm_int8 --no-train        # the table of what is saved
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from onedge.files import atomic_write
from training.models.timm_family import TIMM_ARCHITECTURES

INT8 = ("onnx-int8", "onnx-int8-rr", "openvino-int8")
OPEN_GATES = {"int8_min_agreement": 0.0, "int8_max_top1_drop": 1.0, "fp32_max_abs_diff": 1e-2}


def train_network(architecture: str, args, folder: Path) -> Path:
    from pipeline.config import load_config
    from training.trainer import train

    overrides = {
        "model.name": f"timm/{architecture}",
        "model.branches": 1,
        "method.name": "vanilla",
        "train.epochs": args.epochs,
        "train.lr": args.lr,
        "train.warmup_epochs": 1,
        "train.threads": 1,
        "train.progress": "false",
        "data.limit_train": args.train_images,
        "data.calibration_size": args.calibration,
        "data.val_fraction": 0.02,
        "seed": 0,
    }
    config = load_config(
        Path(__file__).parents[1] / "configs" / "fashion-mnist-one.yaml",
        [f"{k}={v}" for k, v in overrides.items()],
    )
    train(config.training_config(), folder)
    return folder / "checkpoint.pt"


def export_network(checkpoint: Path, args, folder: Path) -> dict:
    from export.config import ExportConfig
    from export.exporter import export_checkpoint

    settings = ExportConfig(
        formats=["onnx", "openvino"],
        precisions=["fp32", "int8"],
        static_batch1=[],
        ort_int8={"candidates": args.ort_candidates, "timing_seconds": 0.2},
        calibration_size=args.calibration,
        eval_limit=args.test_images,
        threads=1,
        tolerances=OPEN_GATES,
    )
    result = export_checkpoint(checkpoint, folder, settings)
    failed = json.loads(result.export_json.read_text()).get("failed", [])
    return {
        "artifacts": {record.name: record.test for record in result.artifacts},
        "failed": {f["name"]: f.get("reason", "") for f in failed},
    }


def measure(architecture: str, args) -> dict:
    from pipeline.report.int8_care import activation_families
    from training.models.timm_family import timm_reference

    work = args.out / "work" / architecture
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.time()
    checkpoint = train_network(architecture, args, work / "run")
    trained = time.time() - t0
    exported = export_network(checkpoint, args, work / "export")
    families = activation_families(timm_reference(architecture, 10, 1, 28))
    shutil.rmtree(work, ignore_errors=True)
    return {
        **exported,
        "activations": sorted(families),
        "train_seconds": round(trained, 1),
        "export_seconds": round(time.time() - t0 - trained, 1),
    }


def table(results: dict) -> str:
    lines = [
        "| architecture | activations | FP32 top-1 | " + " | ".join(f"{n} (drop)" for n in INT8)
        + " | INT8 agreement (ORT / rr / NNCF) |",
        "|---|---|---|" + "---|" * len(INT8) + "---|",
    ]  # fmt: skip
    for name, result in results.items():
        tests = result["artifacts"]
        first = next(iter(tests.values()))
        fp32 = first["top1"] + first["top1_drop_vs_torch_fp32"]  # the PyTorch FP32 network
        cells, agree = [], []
        for artifact in INT8:
            if artifact not in tests:
                cells.append("failed")
                agree.append("-")
                continue
            top1 = tests[artifact]["top1"]
            cells.append(f"{top1:.2%} ({tests[artifact]['top1_drop_vs_torch_fp32'] * 100:+.2f})")
            agree.append(f"{tests[artifact]['top1_agreement']:.1%}")
        acts = ", ".join(result["activations"]) or "none"
        lines.append(
            f"| {name} | {acts} | {fp32:.2%} | " + " | ".join(cells) + f" | {' / '.join(agree)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(TIMM_ARCHITECTURES))
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--ort-candidates", default="qdq-u8s8-pre")
    parser.add_argument("--out", type=Path, default=Path("bench-out/timm-int8"))
    parser.add_argument("--no-train", action="store_true", help="the table of the saved runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "timm-int8.json"
    saved = json.loads(store.read_text()) if store.is_file() else {}
    results = saved.setdefault("results", {})
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("architectures", "out")}
    saved["settings"] = settings
    saved["machine"] = f"{platform.processor() or platform.machine()}, 1 torch thread"
    for architecture in [] if args.no_train else args.architectures:
        if architecture in results:
            continue
        results[architecture] = measure(architecture, args)
        saved["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write(store, json.dumps(saved, indent=1))
        print(f"{architecture}: {results[architecture]}", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
