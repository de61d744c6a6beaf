"""Fashion-MNIST accuracy and cost of ONE against vanilla, DML and an independent ensemble.

Every method trains the same network (CIFAR-style ResNet, 28x28 one-channel input) for the same
epochs and seeds, in one process; the table reports the deployed branch's test top-1 (mean and
spread over seeds), the ensemble's, seconds per epoch, images per second and peak memory, with
ratios against vanilla measured in the same run.

    python -m bench.train_accuracy --epochs 15 --seeds 0 1 --out runs/bench-train
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.host import command_line, machine
from pipeline.config import load_config
from training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    half = (max(values) - min(values)) / 2
    return f"{100 * mean:.2f} ± {100 * half:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/fashion-mnist-one.yaml"))
    parser.add_argument("--methods", nargs="+", default=["vanilla", "one", "dml", "ensemble"])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    parser.add_argument("--out", default=str(ROOT / "runs/bench-train"))
    args = parser.parse_args()

    out = Path(args.out)
    rows: dict[str, list[dict]] = {m: [] for m in args.methods}
    started = time.time()
    for seed in args.seeds:
        for method in args.methods:  # interleaved: every method once per seed
            cfg = load_config(
                Path(args.config),
                [
                    f"method.name={method}",
                    f"model.name={args.model}",
                    f"train.epochs={args.epochs}",
                    f"seed={seed}",
                    "train.progress=false",
                    *args.overrides,
                ],
            ).training_config()
            result = train(cfg, out / f"{method}-seed{seed}")
            m = result.metrics
            rows[method].append(m)
            print(
                f"{method:<9} seed {seed}: deployed {100 * m['deployed_top1']:.2f}%  "
                f"ensemble {100 * m['ensemble_top1']:.2f}%  {m['seconds_per_epoch']:.1f} s/epoch",
                flush=True,
            )
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(rows, indent=2))  # partial, per run

    base = statistics.mean(
        r["seconds_per_epoch"] for r in rows.get("vanilla", rows[args.methods[0]])
    )
    command = command_line()
    lines = [
        f"Command: `{command}`",
        f"Machine: {machine()}",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; wall time {time.time() - started:.0f} s",
        f"Setting: {args.model}, {args.epochs} epochs, seeds {args.seeds}, config {Path(args.config).name}",
        "",
        "| method | deployed top-1 % (mean ± half-range) | ensemble top-1 % | s/epoch | x vanilla | img/s | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, rs in rows.items():
        sec = statistics.mean(r["seconds_per_epoch"] for r in rs)
        lines.append(
            f"| {method} | {spread([r['deployed_top1'] for r in rs])} | "
            f"{spread([r['ensemble_top1'] for r in rs])} | {sec:.2f} | {sec / base:.2f} | "
            f"{statistics.mean(r['images_per_second'] for r in rs):.0f} | "
            f"{max(r['peak_memory_mb'] for r in rs):.0f} |"
        )
    lines.append("")
    lines.append(
        "peak MB: on CUDA the GPU memory allocated by each run; on the CPU the process's peak "
        "RSS so far, which accumulates over the runs of this process."
    )
    if "vanilla" in rows and "one" in rows:
        gain = statistics.mean(r["deployed_top1"] for r in rows["one"]) - statistics.mean(
            r["deployed_top1"] for r in rows["vanilla"]
        )
        lines.append("")
        lines.append(f"ONE deployed branch minus vanilla: {100 * gain:+.2f} points of top-1.")
    report = "\n".join(lines)
    print("\n" + report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
