"""Saved results of bench/methods.py and the tables made from them.

``Results`` is one regime's JSON file: one record per (entry, seed), per-image correctness packed
as hex bits, saved after every run. ``summarise`` and ``table`` give the methods table (every
entry against the baseline on the same seeds); ``plot`` the difference from the baseline per
regime. The student rows (each student against its width trained alone) are in bench/families.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.stats import difference_interval, pooled_mcnemar, seed_test, top1_interval


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


def summarise(results: Results, entries: list[str], seeds: list[int], baseline: str) -> list[dict]:
    """One row per entry: top-1 CI, difference from the baseline with CI and p-values, cost."""
    rows = []
    base = [b for b in (results.get(baseline, s) for s in seeds) if b is not None]
    have_base = bool(base)
    for entry in entries:
        recs = [results.get(entry, s) for s in seeds]
        # a family imported without its run folders has no deployed student: no row here
        recs = [r for r in recs if r is not None and "deployed_correct" in r]
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
        # CPU seconds (all stages, teachers included) do not grow with the machine's load as
        # wall seconds do; older records lack them
        cpu = [r.get("cpu_seconds_total") for r in recs]
        if None not in cpu:
            row["cpu_seconds_total"] = float(np.mean(cpu))
        paired = [(results.get(baseline, r["seed"]), r) for r in recs]
        paired = [(b, r) for b, r in paired if b is not None]
        if paired and entry != baseline:
            a = np.stack([unpack(b["deployed_correct"], size) for b, _ in paired])
            b_ = np.stack([unpack(r["deployed_correct"], size) for _, r in paired])
            row["paired_seeds"] = [r["seed"] for _, r in paired]
            row["difference"] = difference_interval(a, b_).to_dict()
            row["mcnemar"] = pooled_mcnemar(list(zip(a, b_, strict=True))).to_dict()
            row["seed_test"] = seed_test(
                [b["deployed_top1"] for b, _ in paired], [r["deployed_top1"] for _, r in paired]
            ).to_dict()
        if have_base:
            base_total = np.mean([b["seconds_total"] for b in base])
            base_epoch = np.mean([b["seconds_per_epoch"] for b in base])
            row["x_baseline_total"] = row["seconds_total"] / base_total
            row["x_baseline_epoch"] = row["seconds_per_epoch"] / base_epoch
            base_cpu = [b.get("cpu_seconds_total") for b in base]
            if "cpu_seconds_total" in row and None not in base_cpu:
                row["x_baseline_cpu"] = row["cpu_seconds_total"] / float(np.mean(base_cpu))
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
        f"| x {baseline} total | CPU s (with teachers) | x {baseline} CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = pct(r["difference"], signed=True) if "difference" in r else "—"
        p_m = pvalue(r["mcnemar"]["p_value"]) if "mcnemar" in r else "—"
        p_t = pvalue(r["seed_test"]["p_value"]) if "seed_test" in r else "—"
        ratio = f"{r['x_baseline_total']:.2f}" if "x_baseline_total" in r else "—"
        cpu = f"{r['cpu_seconds_total']:.0f}" if "cpu_seconds_total" in r else "n/a"
        x_cpu = f"{r['x_baseline_cpu']:.2f}" if "x_baseline_cpu" in r else "—"
        lines.append(
            f"| {r['entry']} | {pct(r['top1'])} | {diff} | {p_m} | {p_t} | "
            f"{100 * r['ensemble_top1']['estimate']:.2f} | {r['seconds_per_epoch']:.2f} | "
            f"{r['seconds_total']:.0f} | {ratio} | {cpu} | {x_cpu} |"
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
