"""Training cost of every method, teacher stages included, relative to vanilla.

Each method runs its shipped digits config (``configs/digits-<method>.yaml``, or
``digits-one.yaml`` with ``method.name`` set) for the same epochs per stage, interleaved with the
other methods for every seed, in one process; the cost is ``seconds_total`` from metrics.json
(the wall time of every stage: teachers, seed members and generations included) and
``cpu_seconds_total`` (the process's CPU time over the same stages, steadier than wall time on a
shared machine), each divided by vanilla's in the same seed.

    python -m bench.training_cost --epochs 3 --seeds 0 1 --out runs/bench-cost
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

from bench.train_accuracy import machine
from pipeline.config import load_config
from training.methods import METHODS
from training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def method_config(method: str, epochs: int, seed: int, extra: list[str]):
    own = ROOT / "configs" / f"digits-{method}.yaml"
    path = own if own.is_file() else ROOT / "configs" / "digits-one.yaml"
    sets = [] if own.is_file() else [f"method.name={method}"]
    sets += [f"train.epochs={epochs}", f"seed={seed}", "train.progress=false", *extra]
    return load_config(path, sets).training_config()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", nargs="+", default=["vanilla", *[m for m in METHODS.names() if m != "vanilla"]]
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    parser.add_argument("--out", default=str(ROOT / "runs/bench-cost"))
    args = parser.parse_args()
    if args.methods[0] != "vanilla":
        parser.error("the first method must be vanilla: every cost is relative to it")

    out = Path(args.out)
    rows: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            cfg = method_config(method, args.epochs, seed, args.overrides)
            m = train(cfg, out / f"{method}-seed{seed}").metrics
            rows[method].append(m)
            print(
                f"{method:<17} seed {seed}: {m['seconds_total']:.1f} s in "
                f"{len(m['stages'])} stage(s), top-1 {100 * m['deployed_top1']:.2f}%",
                flush=True,
            )

    lines = [
        f"Command: `python -m bench.training_cost --methods {' '.join(args.methods)} "
        f"--epochs {args.epochs} --seeds "
        f"{' '.join(map(str, args.seeds))}`"
        + (f" `--set {' '.join(args.overrides)}`" if args.overrides else ""),
        f"Machine: {machine()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "| method | stages | seconds_total | × vanilla (wall) | cpu_seconds_total | × vanilla (CPU) "
        "| deployed top-1 % |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for method, rs in rows.items():
        pairs = list(zip(rs, rows["vanilla"], strict=True))
        wall = statistics.mean(r["seconds_total"] / v["seconds_total"] for r, v in pairs)
        cpu = statistics.mean(r["cpu_seconds_total"] / v["cpu_seconds_total"] for r, v in pairs)
        summary[method] = {"wall": wall, "cpu": cpu}
        lines.append(
            f"| {method} | {len(rs[0]['stages'])} | "
            f"{statistics.mean(r['seconds_total'] for r in rs):.1f} | {wall:.2f} | "
            f"{statistics.mean(r['cpu_seconds_total'] for r in rs):.1f} | {cpu:.2f} | "
            f"{100 * statistics.mean(r['deployed_top1'] for r in rs):.2f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_cost.md").write_text("\n".join(lines) + "\n")
    (out / "training_cost.json").write_text(json.dumps({"ratio": summary, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
