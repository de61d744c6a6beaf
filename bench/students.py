"""One training, a family of students: each student against the same width trained alone.

Per regime and seed, the student ensemble (docs/METHODS.md §2) trains N students of widths
w_j in one run, and vanilla trains one network at each width w_j alone (``model.width`` times
w_j, same epochs, seed, split and schedule). Per width the table gives the student's test top-1
and its twin's with 95% bootstrap CIs over seeds and images, the paired difference (student
minus twin) with CI, the pooled exact McNemar p-value and the seed t-test p-value, both networks'
parameters and MACs; and the family's training time against the five twins' summed.

The twin is the plain network at that width: its stem is scaled too, where the students share a
full-width stem, so the student is slightly larger (parameters and MACs are in the table).

Results are saved after every run (``docs/benchmarks/students_<regime>.json``, per-image
correctness included), so an interrupted benchmark resumes where it stopped.

    python bench/students.py --regime digits --seeds 0 1 2
    python bench/students.py --regime fmnist-cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.host import machine  # noqa: E402
from bench.methods import Regime, pack, pct, pvalue, unpack  # noqa: E402
from pipeline.config import config_from_data  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.models import count_macs, count_parameters  # noqa: E402
from training.stats import (  # noqa: E402
    difference_interval,
    pooled_mcnemar,
    seed_test,
    top1_interval,
)
from training.trainer import CHECKPOINT, PREDICTIONS, train  # noqa: E402

REGIMES = {
    "digits": Regime(
        "configs/digits-students.yaml",
        (0, 1, 2, 3, 4),
        ("train.threads=1",),
        30,
        "UCI digits (1,257 train, 359 test 8x8 images), ResNet-20 family of 5 widths",
    ),
    "fmnist-cpu": Regime(
        "configs/fashion-mnist-students.yaml",
        (0, 1, 2),
        (
            "data.limit_train=10000",
            "data.batch_size=128",
            "train.warmup_epochs=1",
            "train.threads=2",
        ),  # fmt: skip
        15,
        "Fashion-MNIST, 10,000 training images, official 10,000 test images, "
        "ResNet-20 family of 5 widths, 15 epochs",
    ),
    "fmnist-full": Regime(
        "configs/fashion-mnist-students.yaml",
        (0, 1, 2),
        ("data.batch_size=512", "train.lr=0.2", "train.warmup_epochs=1"),
        60,
        "Fashion-MNIST, all 60,000 training images, ResNet-20 family of 5 widths, for a GPU",
    ),
}


def run_config(regime: Regime, seed: int, method: dict[str, Any], extra: list[str]) -> Any:
    data = yaml.safe_load((ROOT / regime.config).read_text())
    data["method"] = method
    overrides = [*regime.overrides, f"train.epochs={regime.epochs}", f"seed={seed}",
                 "train.progress=false", *extra]  # fmt: skip
    return config_from_data(data, overrides, f"regime {regime.config}")


def cost(run_dir: Path) -> list[tuple[int, int]]:
    """(parameters, MACs) of every extracted branch of a run's checkpoint."""
    loaded = load_checkpoint(run_dir / CHECKPOINT)
    s = loaded.spec
    shape = (1, s.in_channels, s.image_size, s.image_size)
    out = []
    for k in range(loaded.model.num_branches):
        student = loaded.model.extract(k)
        out.append((count_parameters(student), count_macs(student, shape)))
    return out


def train_once(cfg: Any, run_dir: Path) -> dict[str, Any]:
    resume = (run_dir / CHECKPOINT).is_file()
    metrics = train(cfg, run_dir, resume=resume).metrics
    preds = json.loads((run_dir / PREDICTIONS).read_text())
    labels = np.asarray(preds["labels"])
    correct = [np.asarray(p) == labels for p in preds["branches"]]
    return {
        "images": int(labels.size),
        "correct": [pack(c) for c in correct],
        "top1": [float(c.mean()) for c in correct],
        "seconds": metrics["seconds_per_epoch"] * metrics["epochs"],
        "epochs": metrics["epochs"],
        "widths": metrics.get("branch_widths"),
        "cost": cost(run_dir),
    }


def summarise(
    data: dict[str, Any], seeds: list[int], widths: list[float], family: str = "family"
) -> dict[str, Any]:
    rows = []
    runs = data["runs"]
    have = [s for s in seeds if f"{family}@{s}" in runs]
    for j, w in enumerate(widths):
        paired = [s for s in have if f"vanilla-w{w:g}@{s}" in runs]
        if not paired:
            continue
        size = runs[f"{family}@{paired[0]}"]["images"]
        student = np.stack([unpack(runs[f"{family}@{s}"]["correct"][j], size) for s in paired])
        twin = np.stack([unpack(runs[f"vanilla-w{w:g}@{s}"]["correct"][0], size) for s in paired])
        rows.append({
            "student": j, "width": w, "seeds": paired,
            "student_top1": top1_interval(student).to_dict(),
            "twin_top1": top1_interval(twin).to_dict(),
            "difference": difference_interval(twin, student).to_dict(),
            "mcnemar": pooled_mcnemar(list(zip(twin, student, strict=True))).to_dict(),
            "seed_test": seed_test(
                [runs[f"vanilla-w{w:g}@{s}"]["top1"][0] for s in paired],
                [runs[f"{family}@{s}"]["top1"][j] for s in paired],
            ).to_dict(),
            "student_cost": runs[f"{family}@{paired[0]}"]["cost"][j],
            "twin_cost": runs[f"vanilla-w{w:g}@{paired[0]}"]["cost"][0],
        })  # fmt: skip
    both = [s for s in have if all(f"vanilla-w{w:g}@{s}" in runs for w in widths)]
    together = [runs[f"{family}@{s}"]["seconds"] for s in both]
    alone = [sum(runs[f"vanilla-w{w:g}@{s}"]["seconds"] for w in widths) for s in both]
    training = {
        "seeds": both,
        "family_seconds": float(np.mean(together)) if both else None,
        "widths_alone_seconds": float(np.mean(alone)) if both else None,
    }
    return {"rows": rows, "training": training}


def table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| student | width | top-1 % [95% CI] | alone (vanilla) top-1 % | student - alone, points "
        "[95% CI] | p McNemar | p t-test | params / MACs (student) | params / MACs (alone) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        (sp, sm), (tp, tm) = r["student_cost"], r["twin_cost"]
        lines.append(
            f"| s{r['student']} | {r['width']:g} | {pct(r['student_top1'])} | "
            f"{pct(r['twin_top1'])} | {pct(r['difference'], True)} | "
            f"{pvalue(r['mcnemar']['p_value'])} | {pvalue(r['seed_test']['p_value'])} | "
            f"{sp:,} / {sm:,} | {tp:,} / {tm:,} |"
        )
    t = summary["training"]
    if t["family_seconds"] is not None:
        lines += ["", f"Training time (mean over seeds {t['seeds']}): the family in one run "
                  f"{t['family_seconds']:.0f} s; the {len(summary['rows'])} widths trained alone "
                  f"{t['widths_alone_seconds']:.0f} s in all "
                  f"({t['family_seconds'] / t['widths_alone_seconds']:.2f}x)."]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the regime's seeds")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="key=value ...")
    parser.add_argument("--out", default=str(ROOT / "runs/bench-students"))
    parser.add_argument("--docs", default=str(ROOT / "docs/benchmarks"))
    parser.add_argument(
        "--family-set", nargs="*", default=[], help="method.key=value for the family only"
    )
    parser.add_argument("--tag", default="", help="name of a family variant (its own rows)")
    args = parser.parse_args()

    regime = REGIMES[args.regime]
    seeds = args.seeds or list(regime.seeds)
    out = Path(args.out) / args.regime
    path = Path(args.docs) / f"students_{args.regime}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    base = run_config(regime, seeds[0], {"name": "student-ensemble"}, args.overrides)
    n = base.model.branches
    widths = list(base.method.widths or [(n - j) / n for j in range(n)])

    def save() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    started = time.time()
    family = "family" + (f"-{args.tag}" if args.tag else "")
    for seed in seeds:  # interleaved: the family, then every width alone, per seed
        jobs = [(family, {"name": "student-ensemble"}, list(args.family_set))]
        jobs += [(f"vanilla-w{w:g}", {"name": "vanilla"},
                  [f"model.width={base.model.width * w}"]) for w in widths]  # fmt: skip
        for name, method, extra in jobs:
            key = f"{name}@{seed}"
            if key in data["runs"]:
                continue
            cfg = run_config(regime, seed, method, [*args.overrides, *extra]).training_config()
            data["runs"][key] = record = train_once(cfg, out / f"{name}-seed{seed}")
            save()
            print(f"{key:<20} top-1 {' '.join(f'{100 * t:.2f}' for t in record['top1'])}  "
                  f"{record['seconds']:.0f} s", flush=True)  # fmt: skip
    data.pop("summary", None)  # the single-family layout of earlier results
    data.setdefault("summaries", {})[family] = summarise(data, seeds, widths, family)
    data.update({"command": "python " + " ".join(sys.argv), "machine": machine(),
                 "note": regime.note})  # fmt: skip
    save()
    text = "\n".join([
        f"### student-ensemble, {args.regime}: {regime.note}",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Machine: {machine()}",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; wall time of this invocation "
        f"{time.time() - started:.0f} s (saved runs were not retrained)",
        f"Setting: {'/'.join(sorted({str(r['epochs']) for r in data['runs'].values()}))} "
        f"epochs, seeds {seeds}, split_seed 0, config "
        f"{Path(regime.config).name}, overrides {' '.join([*regime.overrides, *args.overrides])}",
        "",
        f"Family: {family} {' '.join(args.family_set)}",
        "",
        *table(data["summaries"][family]),
        "",
        "CIs: percentile bootstrap over seeds and test images. p McNemar: exact test on the "
        "discordant test images summed over the seeds. p t-test: paired t-test of the per-seed "
        "top-1. 'alone' is vanilla at the student's width (its stem scaled as well).",
    ])  # fmt: skip
    print("\n" + text)
    name = args.regime + (f"-{args.tag}" if args.tag else "")
    (Path(args.docs) / f"students_{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
