"""Does distillation pay? Every method against vanilla on the same split, seeds and schedule.

For each regime (data set, network, schedule) and each seed, every named method is trained once,
interleaved (seed 0: all methods, then seed 1, ...), on the same split (``data.split_seed`` is
fixed; the training ``seed`` varies). Per method, on the seeds it shares with the baseline
(vanilla), the table gives the seed-level result first (does the method pay when trained again:
mean per-seed difference with a t-based 95% CI, paired t-test p, exact sign-flip p, seeds), then
what holds for these trained networks only (exact McNemar p per seed; the seeds x images test
with images clustered over seeds), then the seeds a paired t-test needs to find the observed
difference at 80% power, the deployed student's and the ensemble's top-1, and the training cost
(CPU and wall seconds, teacher runs included, ratio to the baseline). A line per method says
what is shown and what is not. Runs on other test images (``images``, ``split_seed``) than the
baseline's are refused.

A family entry (``student-ensemble``: five ResNet-20 students of widths 1.0 .. 0.2 at full
width in every regime, ``METHOD_OVERRIDES``) also trains each width alone (vanilla at that width,
same epochs, seeds and split) right after the family of each seed, and adds a table: each
student against its twin (paired difference, CI, McNemar and t-test p) and the family's training
time against the widths trained alone (bench/families.py).

Results are saved after every run (``<docs>/methods_<regime>[-tag].json``, per-image correctness
of every branch included), so an interrupted benchmark resumes where it stopped; a run folder
left half-trained is resumed from its checkpoint. ``--no-train`` makes the tables from the saved
runs alone.

    python -m bench.methods --regime digits --methods vanilla one
    python -m bench.methods --regime fmnist-cpu --methods vanilla one dml ensemble kd
    python -m bench.methods --regime digits --methods vanilla one "vanilla:model.width=0.5"
    python -m bench.methods --regime fmnist-cpu --methods vanilla student-ensemble \
        "student-ensemble:method.student_ce=true"

A method entry is a registered method name, optionally followed by ``:key=value,key=value``
overrides (its label is the whole entry), so a row can be a method at another width or setting.

``--teacher ENTRY`` trains ENTRY once per seed and gives its checkpoint to every method that
takes teacher checkpoints (kd, srm: one; meal: every ``--teacher`` as its pool), so those rows
share one teacher and differ only in the method; the teacher's wall and CPU seconds are counted
in each of them:

    python -m bench.methods --regime fmnist-cpu --methods vanilla srm meal kd \
        --teacher "vanilla:model.width=1" --set train.threads=1

``--no-train --table NAME`` writes another table of the same saved runs (another baseline, a
subset of seeds) to ``<docs>/NAME.md`` and leaves the JSON as it is; the commands that remake
every table in docs/benchmarks/ are at the top of docs/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.families import (
    branch_cost,
    parse_entry,
    summarise_family,
    twin_entries,
)
from bench.host import machine
from bench.method_report import (
    claims,
    claims_block,
    missing_text,
    report_lines,
    students_block,
    write_blocks,
)
from bench.method_tables import Results, pack, plot, summarise
from onedge.errors import OnedgeError, first_line
from pipeline.config import config_from_data
from training.trainer import CHECKPOINT, PREDICTIONS, train

ROOT = Path(__file__).resolve().parents[1]


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
# Teachers a method needs, trained as another entry of the same seed: method -> teacher entry.
# ``--teacher ENTRY`` gives every method of TAKES_TEACHERS that entry's network instead (one
# teacher per seed, trained once and shared by every method of the comparison).
TEACHER_OF = {"kd": "ensemble"}
# How a method takes given teacher checkpoints: method -> its config key (one path or a list)
TAKES_TEACHERS = {"kd": "teacher", "srm": "teacher", "meal": "teachers"}
# A method's own settings in every regime, after the regime's: the family of students is five
# ResNet-20 students at full width (configs/*-students.yaml), whatever width the regime gives
# the other methods
METHOD_OVERRIDES = {"student-ensemble": ("model.branches=5", "model.width=1.0")}


def run_config(
    regime: Regime, entry: str, seed: int, extra: list[str], teachers: list[Path] | None = None
):
    """The validated run configuration of one method entry and seed in a regime; ``teachers``
    are trained checkpoints the method takes instead of training its own teacher stages."""
    name, entry_overrides = parse_entry(entry)
    data = yaml.safe_load((ROOT / regime.config).read_text())
    method: dict[str, Any] = {"name": name}
    if name == "one":
        method.update(_one(regime.epochs))
    method.update(regime.method_settings.get(name, {}))
    if teachers:
        key = TAKES_TEACHERS.get(name)
        if key is None:
            raise ValueError(f"{name} takes no teacher checkpoints (only {sorted(TAKES_TEACHERS)})")
        if key == "teachers":
            method[key] = [str(t) for t in teachers]
        elif len(teachers) == 1:
            method[key] = str(teachers[0])
        else:
            raise ValueError(f"{name} takes one teacher, not {len(teachers)}")
    data["method"] = method
    overrides = [
        *regime.overrides,
        *METHOD_OVERRIDES.get(name, ()),
        f"train.epochs={regime.epochs}",
        f"seed={seed}",
        "train.progress=false",
        *extra,
        *entry_overrides,
    ]
    return config_from_data(data, overrides, f"regime {entry}")


def correctness(run_dir: Path) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """Per-image correctness of the deployed student, the ensemble and every branch."""
    preds = json.loads((run_dir / PREDICTIONS).read_text())
    labels = np.asarray(preds["labels"])
    deployed = np.asarray(preds["deployed"]) == labels
    ensemble = np.asarray(preds["ensemble"]) == labels
    branches = [np.asarray(p) == labels for p in preds["branches"]]
    return deployed, ensemble, branches, int(preds.get("split_seed", 0))


def none_or_sum(a: float | None, b: float | None) -> float | None:
    """a + b, or None when either is unknown (an older record without CPU seconds)."""
    return None if a is None or b is None else a + b


def teacher_entries(entry: str, given: list[str]) -> list[str]:
    """The entries whose networks teach ``entry``: ``given`` (``--teacher``) for a method that
    takes teacher checkpoints, else the method's default teacher entry, else none (the method
    trains its own teacher stages, counted in its own time)."""
    name, _ = parse_entry(entry)
    if given and name in TAKES_TEACHERS:
        return list(given)
    return [TEACHER_OF[name]] if name in TEACHER_OF else []


def train_entry(
    regime: Regime,
    entry: str,
    seed: int,
    out: Path,
    results: Results,
    extra: list[str],
    teachers: list[str] | None = None,
) -> dict[str, Any]:
    """Train one (entry, seed) unless its result is saved; its teacher entries first (their
    time is added to the entry's total)."""
    taught_by = teacher_entries(entry, teachers or [])
    done = results.get(entry, seed)
    if done is not None:
        # a saved result is only this entry's if the same teachers taught it (records older
        # than --teacher were taught by the method's default)
        saved = done.get("teacher_entries", teacher_entries(entry, []))
        if saved != taught_by:
            raise ValueError(
                f"{results.key(entry, seed)} is saved as taught by {saved or 'no entry'}, not "
                f"{taught_by or 'no entry'}: give this comparison its own --tag"
            )
        return done
    name, _ = parse_entry(entry)
    teacher_ckpts, teacher_seconds, teacher_cpu = [], 0.0, 0.0
    for teacher_entry in taught_by:
        teacher = train_entry(regime, teacher_entry, seed, out, results, extra)
        teacher_ckpts.append(out / "runs" / teacher["folder"] / CHECKPOINT)
        teacher_seconds += teacher["seconds_total"]
        teacher_cpu = none_or_sum(teacher_cpu, teacher.get("cpu_seconds_total"))
    cfg = run_config(regime, entry, seed, extra, teacher_ckpts).training_config()
    folder = f"{entry.replace(':', '_').replace(',', '_').replace('=', '-')}-seed{seed}"
    run_dir = out / "runs" / folder
    resume = run_dir.is_dir()  # a run killed in any stage (teachers included) goes on there
    started = time.perf_counter()
    metrics = train(cfg, run_dir, resume=resume).metrics
    wall = time.perf_counter() - started
    # training time: the epochs' own seconds (or the method's total over its stages), so the
    # process's start-up and data loading do not weigh on whichever method runs first
    own = metrics.get("seconds_total", metrics["seconds_per_epoch"] * metrics["epochs"])
    deployed, ensemble, branches, split_seed = correctness(run_dir)
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
        # CPU seconds of every stage and teacher: unlike wall seconds, not inflated by load
        "cpu_seconds_total": none_or_sum(metrics.get("cpu_seconds_total"), teacher_cpu),
        "teacher_entries": taught_by,
        "resumed": resume,
        "parameters_student": metrics["parameters_student"],
        "deployed_branch": metrics["deployed_branch"],
        # every branch, for the student rows (bench/families.py)
        "branch_correct": [pack(c) for c in branches],
        "branch_top1": [float(c.mean()) for c in branches],
        "widths": metrics["branch_widths"],
        "model_width": cfg.model.width,
        "cost": branch_cost(run_dir / CHECKPOINT),
    }
    results.put(entry, seed, record)
    print(
        f"{entry:<24} seed {seed}: deployed {100 * record['deployed_top1']:.2f}%  "
        f"ensemble {100 * record['ensemble_top1']:.2f}%  "
        f"{metrics['seconds_per_epoch']:.1f} s/epoch  {wall:.0f} s",
        flush=True,
    )
    return record


def run_all(
    regime: Regime,
    entries: list[str],
    seeds: list[int],
    out: Path,
    results: Results,
    extra: list[str],
    no_train: bool = False,
    teachers: list[str] | None = None,
) -> list[str]:
    """Every entry once per seed, interleaved, a family's twins right after it; the (entry,
    seed) pairs without a saved result are returned (with ``no_train``, nothing is trained)."""
    missing = []

    def run(entry: str, seed: int) -> dict[str, Any] | None:
        if no_train:
            record = results.get(entry, seed)
            if record is None:
                missing.append(results.key(entry, seed))
            return record
        return train_entry(regime, entry, seed, out, results, extra, teachers)

    for seed in seeds:
        for entry in entries:
            record = run(entry, seed)
            for twin in twin_entries(entry, record):
                run(twin, seed)
    return missing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="ENTRY",
        help=f"train ENTRY once per seed and give it as the teacher of {sorted(TAKES_TEACHERS)} "
        "(repeat for a pool: meal takes them all); its time counts in theirs",
    )
    parser.add_argument(
        "--no-train", action="store_true", help="tables from the saved runs only; train nothing"
    )
    parser.add_argument(
        "--table",
        default="",
        metavar="NAME",
        help="with --no-train: write the table to <docs>/NAME.md and leave the JSON unchanged",
    )
    parser.add_argument(
        "--into-doc",
        type=Path,
        action="append",
        default=[],
        metavar="MARKDOWN",
        help="with --no-train: also write the compact table and a line per method into the "
        "file's <!-- table:NAME begin/end --> block, the lines alone into its <!-- claims:NAME "
        "begin/end --> block (NAME: the table's name); repeat for several files",
    )
    args = parser.parse_args(argv)
    if args.into_doc and not args.no_train:
        parser.error("--into-doc needs --no-train")
    if args.table and not args.no_train:
        parser.error("--table needs --no-train (a training run writes the regime's own table)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(
        ["python", "-m", "bench.methods", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        run(args, command)
    except OnedgeError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args: argparse.Namespace, command: str) -> None:
    regime = REGIMES[args.regime]
    seeds = args.seeds or list(regime.seeds)
    entries = list(dict.fromkeys([args.baseline, *args.methods]))
    name = args.regime + (f"-{args.tag}" if args.tag else "")
    out = Path(args.out) / name
    docs = Path(args.docs)
    results = Results(docs / f"methods_{name}.json")
    if not args.no_train:
        results.data.update(
            {
                "regime": args.regime,
                "note": regime.note,
                "overrides": [*regime.overrides, *args.overrides],
                "teachers": args.teacher,
            }
        )
    started = time.time()
    missing = run_all(
        regime, entries, seeds, out, results, args.overrides, args.no_train, args.teacher
    )
    rows = summarise(results, entries, seeds, args.baseline)
    families = {e: f for e in entries if (f := summarise_family(results, e, seeds)) is not None}
    if not args.table:
        results.data["summary"] = rows
        results.data["students"] = families
        if not args.no_train:
            results.data.update({"command": command, "machine": machine()})
        results.save()
    wall = time.time() - started
    report = report_lines(args, regime, results, rows, families, seeds, entries, command, wall)
    if args.no_train:
        report += ["", f"Made with `{command}` from the saved runs."]
    if missing:
        report += ["", f"Not yet run (no saved result): {missing_text(missing)}"]
    text = "\n".join(report)
    print("\n" + text)
    docs.mkdir(parents=True, exist_ok=True)
    table_name = args.table or f"methods_{name}"
    (docs / f"{table_name}.md").write_text(text + "\n")
    made = f"Made with `{command}`."
    for doc in args.into_doc:
        blocks = {
            "table": [*claims_block(rows, families, args.baseline, table_name), made],
            "claims": claims(rows, args.baseline),
            "students": [*students_block(families, table_name), made],
        }
        write_blocks(doc, table_name, blocks)
    if args.table:  # the JSON summaries (what the plot draws) are unchanged
        return
    all_rows = {}
    for path in sorted(docs.glob("methods_*.json")):
        summary = json.loads(path.read_text()).get("summary")
        if summary:
            all_rows[path.stem.removeprefix("methods_")] = summary
    plot(all_rows, args.baseline, docs / "methods.png")


if __name__ == "__main__":
    main()
