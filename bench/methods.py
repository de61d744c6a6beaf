"""Does distillation pay? Every method against vanilla on the same split, seeds and schedule.

For each regime (data set, network, schedule) and each seed, every named method is trained once,
interleaved (seed 0: all methods, then seed 1, ...), on the same split (``data.split_seed`` is
fixed; the training ``seed`` varies). Per method the table gives the deployed student's test
top-1 with a 95% bootstrap CI over seeds and images, its paired difference from the baseline
(vanilla) with CI, the pooled exact McNemar p-value (discordant images summed over seeds) and the
paired t-test p-value across seeds, the ensemble's top-1, and the training cost (seconds per
epoch, total wall time including teacher runs, ratio to the baseline).

Results are saved after every run (``<out>/<regime>/results.json``, per-image correctness
included), so an interrupted benchmark resumes where it stopped; a run folder left half-trained
is resumed from its checkpoint.

    python bench/methods.py --regime digits --methods vanilla one
    python bench/methods.py --regime fmnist-cpu --methods vanilla one dml ensemble kd
    python bench/methods.py --regime digits --methods vanilla one "vanilla:model.width=0.5"

A method entry is a registered method name, optionally followed by ``:key=value,key=value``
overrides (its label is the whole entry), so a row can be a method at another width or setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.host import machine  # noqa: E402
from pipeline.config import config_from_data  # noqa: E402
from training.stats import (  # noqa: E402
    difference_interval,
    pooled_mcnemar,
    seed_test,
    top1_interval,
)
from training.trainer import CHECKPOINT, PREDICTIONS, train  # noqa: E402


@dataclass(frozen=True)
class Regime:
    """A data set, network and schedule every method of a comparison shares."""

    config: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    epochs: int
    note: str
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def _one(epochs: int) -> dict[str, Any]:
    # ONE's ramp-up spans 80 of 300 epochs in the paper's schedule: keep that share
    return {"temperature": 3.0, "rampup": True, "rampup_epochs": max(1, round(epochs * 80 / 300))}


REGIMES: dict[str, Regime] = {
    "digits": Regime(
        config="configs/digits-one.yaml",
        seeds=(0, 1, 2, 3, 4),
        overrides=("train.threads=1",),
        epochs=30,
        note="UCI digits (1,797 8x8 images; 1,257 train, 359 test), ResNet-20, 3 branches",
        method_settings={"one": {"rampup_epochs": 10}},
    ),
    "fmnist-cpu": Regime(
        config="configs/fashion-mnist-one.yaml",
        seeds=(0, 1, 2),
        overrides=(
            "data.limit_train=10000",
            "model.width=0.5",
            "data.batch_size=128",
            "train.lr=0.1",
            "train.warmup_epochs=1",
            "train.threads=2",
        ),
        epochs=15,
        note="Fashion-MNIST, 10,000 training images, official 10,000 test images, "
        "ResNet-20 at width 0.5, 3 branches, 15 epochs",
    ),
    "fmnist-small": Regime(
        config="configs/fashion-mnist-one.yaml",
        seeds=(0, 1, 2),
        overrides=(
            "data.limit_train=2500",
            "data.val_fraction=0.02",
            "model.width=0.5",
            "data.batch_size=64",
            "train.lr=0.1",
            "train.warmup_epochs=1",
            "train.threads=2",
        ),
        epochs=30,
        note="Fashion-MNIST, 2,500 training images, official 10,000 test images, "
        "ResNet-20 at width 0.5, 3 branches, 30 epochs",
    ),
    "fmnist-full": Regime(
        config="configs/fashion-mnist-one.yaml",
        seeds=(0, 1, 2),
        overrides=("data.batch_size=512", "train.lr=0.2", "train.warmup_epochs=1"),
        epochs=60,
        note="Fashion-MNIST, all 60,000 training images (val carved), ResNet-20, for a GPU",
    ),
}
# Teachers a method needs, trained as another method of the same seed: method -> teacher method
TEACHER_OF = {"kd": "ensemble"}


def parse_entry(entry: str) -> tuple[str, list[str]]:
    """``name[:k=v,k=v]`` -> (method name, overrides)."""
    name, _, rest = entry.partition(":")
    return name, [item for item in rest.split(",") if item]


def run_config(regime: Regime, entry: str, seed: int, extra: list[str], teacher: Path | None):
    """The validated run configuration of one method entry and seed in a regime."""
    name, entry_overrides = parse_entry(entry)
    data = yaml.safe_load((ROOT / regime.config).read_text())
    method: dict[str, Any] = {"name": name}
    if name == "one":
        method.update(_one(regime.epochs))
    method.update(regime.method_settings.get(name, {}))
    if teacher is not None:
        method["teacher"] = str(teacher)
    data["method"] = method
    overrides = [
        *regime.overrides,
        f"train.epochs={regime.epochs}",
        f"seed={seed}",
        "train.progress=false",
        *extra,
        *entry_overrides,
    ]
    return config_from_data(data, overrides, f"regime {entry}")


def correctness(run_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    preds = json.loads((run_dir / PREDICTIONS).read_text())
    labels = np.asarray(preds["labels"])
    deployed = np.asarray(preds["deployed"]) == labels
    ensemble = np.asarray(preds["ensemble"]) == labels
    return deployed, ensemble, int(preds.get("split_seed", 0))


def pack(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def unpack(text: str, size: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:size].astype(bool)


class Results:
    """``results.json`` of one regime: one record per (entry, seed), saved after every run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"runs": {}}
        if path.is_file():
            self.data = json.loads(path.read_text())

    def key(self, entry: str, seed: int) -> str:
        return f"{entry}@seed{seed}"

    def get(self, entry: str, seed: int) -> dict[str, Any] | None:
        return self.data["runs"].get(self.key(entry, seed))

    def put(self, entry: str, seed: int, record: dict[str, Any]) -> None:
        self.data["runs"][self.key(entry, seed)] = record
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def train_entry(
    regime: Regime, entry: str, seed: int, out: Path, results: Results, extra: list[str]
) -> dict[str, Any]:
    """Train one (entry, seed) unless its result is saved; teachers first."""
    done = results.get(entry, seed)
    if done is not None:
        return done
    name, _ = parse_entry(entry)
    teacher_ckpt, teacher_seconds = None, 0.0
    if name in TEACHER_OF:
        teacher_entry = TEACHER_OF[name]
        teacher = train_entry(regime, teacher_entry, seed, out, results, extra)
        teacher_ckpt = out / "runs" / teacher["folder"] / CHECKPOINT
        teacher_seconds = teacher["seconds_total"]
    cfg = run_config(regime, entry, seed, extra, teacher_ckpt).training_config()
    folder = f"{entry.replace(':', '_').replace(',', '_').replace('=', '-')}-seed{seed}"
    run_dir = out / "runs" / folder
    resume = run_dir.is_dir()  # a run killed in any stage (teachers included) goes on there
    started = time.perf_counter()
    metrics = train(cfg, run_dir, resume=resume).metrics
    wall = time.perf_counter() - started
    # training time: the epochs' own seconds (or the method's total over its stages), so the
    # process's start-up and data loading do not weigh on whichever method runs first
    own = metrics.get("seconds_total", metrics["seconds_per_epoch"] * metrics["epochs"])
    deployed, ensemble, split_seed = correctness(run_dir)
    record = {
        "entry": entry,
        "method": name,
        "seed": seed,
        "folder": folder,
        "split_seed": split_seed,
        "images": int(deployed.size),
        "deployed_top1": float(deployed.mean()),
        "ensemble_top1": float(ensemble.mean()),
        "deployed_correct": pack(deployed),
        "ensemble_correct": pack(ensemble),
        "seconds_per_epoch": metrics["seconds_per_epoch"],
        "epochs": metrics["epochs"],
        "seconds_wall": wall,
        "seconds_total": own + teacher_seconds,
        "teacher_seconds": teacher_seconds,
        "resumed": resume,
        "parameters_student": metrics["parameters_student"],
    }
    results.put(entry, seed, record)
    print(
        f"{entry:<24} seed {seed}: deployed {100 * record['deployed_top1']:.2f}%  "
        f"ensemble {100 * record['ensemble_top1']:.2f}%  "
        f"{metrics['seconds_per_epoch']:.1f} s/epoch  {wall:.0f} s",
        flush=True,
    )
    return record


def summarise(results: Results, entries: list[str], seeds: list[int], baseline: str) -> list[dict]:
    """One row per entry: top-1 CI, difference from the baseline with CI and p-values, cost."""
    rows = []
    base = [b for b in (results.get(baseline, s) for s in seeds) if b is not None]
    have_base = bool(base)
    for entry in entries:
        recs = [results.get(entry, s) for s in seeds]
        recs = [r for r in recs if r is not None]
        if not recs:
            continue
        used = [r["seed"] for r in recs]
        size = recs[0]["images"]
        dep = np.stack([unpack(r["deployed_correct"], size) for r in recs])
        ens = np.stack([unpack(r["ensemble_correct"], size) for r in recs])
        row: dict[str, Any] = {
            "entry": entry,
            "seeds": used,
            "images": size,
            "top1": top1_interval(dep).to_dict(),
            "ensemble_top1": top1_interval(ens, resamples=2000).to_dict(),
            "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in recs])),
            "seconds_total": float(np.mean([r["seconds_total"] for r in recs])),
        }
        paired = [(results.get(baseline, r["seed"]), r) for r in recs]
        paired = [(b, r) for b, r in paired if b is not None]
        if paired and entry != baseline:
            a = np.stack([unpack(b["deployed_correct"], size) for b, _ in paired])
            b_ = np.stack([unpack(r["deployed_correct"], size) for _, r in paired])
            row["paired_seeds"] = [r["seed"] for _, r in paired]
            row["difference"] = difference_interval(a, b_).to_dict()
            row["mcnemar"] = pooled_mcnemar(list(zip(a, b_, strict=True))).to_dict()
            row["seed_test"] = seed_test(
                [b["deployed_top1"] for b, _ in paired], [r["deployed_top1"] for r in recs]
            ).to_dict()
        if have_base:
            base_total = np.mean([b["seconds_total"] for b in base])
            base_epoch = np.mean([b["seconds_per_epoch"] for b in base])
            row["x_baseline_total"] = row["seconds_total"] / base_total
            row["x_baseline_epoch"] = row["seconds_per_epoch"] / base_epoch
        rows.append(row)
    return rows


def epochs_run(results: Results, entries: list[str], seeds: list[int]) -> str:
    found = {r["epochs"] for e in entries for s in seeds if (r := results.get(e, s)) is not None}
    return "/".join(str(e) for e in sorted(found)) or "no"


def pct(iv: dict[str, float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return (
        f"{100 * iv['estimate']:{sign}.2f} "
        f"[{100 * iv['low']:{sign}.2f}, {100 * iv['high']:{sign}.2f}]"
    )


def pvalue(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def table(rows: list[dict], baseline: str) -> list[str]:
    lines = [
        f"| method | deployed top-1 % [95% CI] | vs {baseline}, points [95% CI] | p McNemar "
        "(pooled) | p t-test (seeds) | ensemble top-1 % | s/epoch | total s (with teachers) "
        f"| x {baseline} total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = pct(r["difference"], signed=True) if "difference" in r else "—"
        p_m = pvalue(r["mcnemar"]["p_value"]) if "mcnemar" in r else "—"
        p_t = pvalue(r["seed_test"]["p_value"]) if "seed_test" in r else "—"
        ratio = f"{r['x_baseline_total']:.2f}" if "x_baseline_total" in r else "—"
        lines.append(
            f"| {r['entry']} | {pct(r['top1'])} | {diff} | {p_m} | {p_t} | "
            f"{100 * r['ensemble_top1']['estimate']:.2f} | {r['seconds_per_epoch']:.2f} | "
            f"{r['seconds_total']:.0f} | {ratio} |"
        )
    return lines


def plot(rows_by_regime: dict[str, list[dict]], baseline: str, path: Path) -> None:
    """Top-1 difference from the baseline with its 95% CI, one panel per regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {k: [r for r in v if "difference" in r] for k, v in rows_by_regime.items()}
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False, constrained_layout=True
    )
    for ax, (regime, rows) in zip(axes[0], panels.items(), strict=True):
        names = [r["entry"] for r in rows]
        est = np.array([100 * r["difference"]["estimate"] for r in rows])
        low = est - np.array([100 * r["difference"]["low"] for r in rows])
        high = np.array([100 * r["difference"]["high"] for r in rows]) - est
        colors = ["tab:green" if r["difference"]["low"] > 0 else "tab:gray" for r in rows]
        ax.barh(names, est, xerr=[low, high], color=colors, capsize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(regime)
        ax.set_xlabel(f"top-1 minus {baseline} (points, 95% CI)")
        ax.invert_yaxis()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), required=True)
    parser.add_argument("--methods", nargs="+", default=["vanilla", "one", "dml", "ensemble", "kd"])
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the regime's seeds")
    parser.add_argument("--baseline", default="vanilla")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="key=value ...")
    parser.add_argument("--out", default=str(ROOT / "runs/bench-methods"))
    parser.add_argument(
        "--docs", default=str(ROOT / "docs/benchmarks"), help="where the table, JSON, plot go"
    )
    parser.add_argument("--tag", default="", help="suffix for the output names (a variant)")
    args = parser.parse_args()

    regime = REGIMES[args.regime]
    seeds = args.seeds or list(regime.seeds)
    entries = list(dict.fromkeys([args.baseline, *args.methods]))
    name = args.regime + (f"-{args.tag}" if args.tag else "")
    out = Path(args.out) / name
    docs = Path(args.docs)
    results = Results(docs / f"methods_{name}.json")
    results.data.update(
        {
            "regime": args.regime,
            "note": regime.note,
            "overrides": [*regime.overrides, *args.overrides],
        }
    )
    started = time.time()
    for seed in seeds:
        for entry in entries:  # interleaved: every method once per seed
            train_entry(regime, entry, seed, out, results, args.overrides)
    rows = summarise(results, entries, seeds, args.baseline)
    results.data["summary"] = rows
    results.data.update({"command": "python " + " ".join(sys.argv), "machine": machine()})
    results.save()
    report = [
        f"### {name}: {regime.note}",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Machine: {machine()}",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; this invocation's wall time "
        f"{time.time() - started:.0f} s (runs already saved were not retrained)",
        f"Setting: {epochs_run(results, entries, seeds)} epochs, seeds {seeds}, split_seed 0, config "
        f"{Path(regime.config).name}, overrides {' '.join([*regime.overrides, *args.overrides])}",
        "",
        *table(rows, args.baseline),
        "",
        "CIs: percentile bootstrap over seeds and test images (10,000 resamples). p McNemar: "
        "exact test on the discordant test images summed over the seed pairs. p t-test: paired "
        "t-test of the per-seed top-1 differences. Peers (dml, ensemble): deployed = the member "
        "with the best validation top-1.",
    ]
    text = "\n".join(report)
    print("\n" + text)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"methods_{name}.md").write_text(text + "\n")
    all_rows = {}
    for path in sorted(docs.glob("methods_*.json")):
        summary = json.loads(path.read_text()).get("summary")
        if summary:
            all_rows[path.stem.removeprefix("methods_")] = summary
    plot(all_rows, args.baseline, docs / "methods.png")


if __name__ == "__main__":
    main()
