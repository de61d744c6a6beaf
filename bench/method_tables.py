"""Saved results of bench/methods.py and the tables made from them.

``Results`` is one regime's JSON file: one record per (entry, seed), per-image correctness packed
as hex bits, saved after every run. ``summarise`` and ``table`` give the methods table: every
entry against the baseline on the seeds both have. ``plot`` draws the seed-level difference from
the baseline per regime. The student rows (each student against its width trained alone) are in
bench/families.py; both use :func:`paired_evidence` and :func:`evidence_cells`.

A row's headline is the seed-level result (the method question, training/stats/seeds.py
``seed_test``): mean per-seed difference with its t-based CI, the paired t-test p, the exact
sign-flip p, and the seeds. Then the same comparison for these trained networks only (per-seed
exact McNemar, and the seeds x images test with images clustered over seeds), then the seeds a
paired t-test needs to find the observed difference at 80% power.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from onedge.errors import ConfigError
from training.stats import (
    clustered_test,
    difference_bootstrap,
    mcnemar,
    power_summary,
    seed_mean,
    seed_test,
    top1_bootstrap,
)

BOOTSTRAP = 2_000  # resamples of the seeds x images bootstraps (kept in the JSON, not tabled)


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


def check_pairable(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    """Refuse to pair two runs scored on different test images (count or split)."""
    for key in ("images", "split_seed"):
        if a.get(key, 0) != b.get(key, 0):
            raise ConfigError(
                f"{what}: cannot pair seed {a['seed']} of {a['entry']} ({key} {a.get(key, 0)}) "
                f"with seed {b['seed']} of {b['entry']} ({key} {b.get(key, 0)})"
            )


def paired_evidence(a: np.ndarray, b: np.ndarray, seeds: list[int]) -> dict[str, Any]:
    """b against a, both (seeds, images) correctness, seed i of a paired with seed i of b."""
    test = seed_test(a.mean(axis=1), b.mean(axis=1))
    return {
        "paired_seeds": seeds,
        "difference": test.to_dict(),  # seed level: mean, t-CI, p, sign-flip p, sd, reason
        "power": power_summary(test),
        "these_networks": clustered_test(a, b).to_dict(),
        "mcnemar_per_seed": [
            {"seed": s, **mcnemar(x, y).to_dict()} for s, x, y in zip(seeds, a, b, strict=True)
        ],
        # seeds x images; below MIN_BOOTSTRAP_SEEDS seeds not a method-level interval
        "difference_bootstrap": difference_bootstrap(a, b, resamples=BOOTSTRAP).to_dict(),
    }


def _stack(records: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.stack([unpack(r[key], r["images"]) for r in records])


def _cost(row: dict[str, Any], recs: list[dict], base: list[dict]) -> None:
    """Mean wall and CPU seconds of ``recs`` and their ratio to the baseline's on those seeds."""
    row["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in recs]))
    row["seconds_total"] = float(np.mean([r["seconds_total"] for r in recs]))
    # CPU seconds (all stages, teachers included) do not grow with the machine's load as wall
    # seconds do; older records lack them
    cpu = [r.get("cpu_seconds_total") for r in recs]
    if None not in cpu:
        row["cpu_seconds_total"] = float(np.mean(cpu))
    if not base:
        return
    row["x_baseline_total"] = row["seconds_total"] / np.mean([b["seconds_total"] for b in base])
    row["x_baseline_epoch"] = row["seconds_per_epoch"] / np.mean(
        [b["seconds_per_epoch"] for b in base]
    )
    base_cpu = [b.get("cpu_seconds_total") for b in base]
    if "cpu_seconds_total" in row and None not in base_cpu:
        row["x_baseline_cpu"] = row["cpu_seconds_total"] / float(np.mean(base_cpu))


def summarise(results: Results, entries: list[str], seeds: list[int], baseline: str) -> list[dict]:
    """One row per entry against the baseline on the seeds both have (top-1, difference and
    cost all on those seeds); the baseline's row on all its seeds. Runs on other test images
    (``images``, ``split_seed``) than the baseline's are refused, not paired."""
    rows = []
    for entry in entries:
        # a family imported without its run folders has no deployed student: no row here
        own = [r for s in seeds if (r := results.get(entry, s)) and "deployed_correct" in r]
        if not own:
            continue
        base = {s: b for s in seeds if (b := results.get(baseline, s)) and "deployed_correct" in b}
        recs = own if entry == baseline or not base else [r for r in own if r["seed"] in base]
        if not recs:
            rows.append({"entry": entry, "seeds": [], "unpaired_seeds": [r["seed"] for r in own]})
            continue
        for r in recs[1:]:
            check_pairable(recs[0], r, entry)
        used = [r["seed"] for r in recs]
        dep = _stack(recs, "deployed_correct")
        row: dict[str, Any] = {
            "entry": entry,
            "seeds": used,
            "unpaired_seeds": [r["seed"] for r in own if r["seed"] not in used],
            "images": recs[0]["images"],
            "split_seed": recs[0].get("split_seed", 0),
            "top1": seed_mean(dep.mean(axis=1)).to_dict(),
            "top1_bootstrap": top1_bootstrap(dep, resamples=BOOTSTRAP).to_dict(),
            "ensemble_top1": float(np.mean([r["ensemble_top1"] for r in recs])),
        }
        paired = [base[s] for s in used] if base and entry != baseline else []
        if paired:
            for b, r in zip(paired, recs, strict=True):
                check_pairable(b, r, f"{entry} against {baseline}")
            row.update(paired_evidence(_stack(paired, "deployed_correct"), dep, used))
        _cost(row, recs, [base[s] for s in used if s in base])
        rows.append(row)
    return rows


def epochs_run(results: Results, entries: list[str], seeds: list[int]) -> str:
    found = {r["epochs"] for e in entries for s in seeds if (r := results.get(e, s)) is not None}
    return "/".join(str(e) for e in sorted(found)) or "no"


def pct(iv: dict[str, Any], signed: bool = False) -> str:
    """A percentage with its CI; a bare estimate when the CI is undefined."""
    sign = "+" if signed else ""
    value = iv["estimate"] if "estimate" in iv else iv["mean"]
    if iv.get("low") is None:
        return f"{100 * value:{sign}.2f}"
    return f"{100 * value:{sign}.2f} [{100 * iv['low']:{sign}.2f}, {100 * iv['high']:{sign}.2f}]"


def pvalue(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def p_is(p: float) -> str:
    """``p = 0.03`` or ``p < 1e-4``, for prose."""
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def seeds_text(seeds: list[int]) -> str:
    """``5 (0-4)`` or ``3 (0, 2, 5)``."""
    if not seeds:
        return "0"
    run = seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2
    listed = f"{seeds[0]}-{seeds[-1]}" if run else ", ".join(map(str, seeds))
    return f"{len(seeds)} ({listed})"


def why_not(test: dict[str, Any]) -> str:
    """A short reason a seed-level p-value is missing."""
    reason = test.get("reason") or ""
    n = test["seeds"]
    return "no variance" if "no variance" in reason else f"{n} seed{'s' if n > 1 else ''} < 3"


def evidence_cells(row: dict[str, Any]) -> list[str]:
    """difference, p t-test, p sign-flip, McNemar per seed, these networks, seeds for 80%."""
    if "difference" not in row:
        return ["—"] * 6
    d, nets, pw = row["difference"], row["these_networks"], row["power"]
    p_t = pvalue(d["p_value"]) if d["p_value"] is not None else f"n/a ({why_not(d)})"
    flip = pvalue(d["sign_flip_p"]) if d["sign_flip_p"] is not None else "n/a"
    per_seed = " / ".join(pvalue(m["p_value"]) for m in row["mcnemar_per_seed"])
    net = f"{pct(nets, True)}, p {pvalue(nets['p_value'])}"
    if pw["seeds_80"] is not None:
        need = str(pw["seeds_80"])
    else:
        need = "n/a" if not pw.get("sd") or pw["effect"] == 0 else "> 1000"
    return [pct(d, True), p_t, flip, per_seed, net, need]


EVIDENCE_HEADER = (
    "p t-test (seeds) | p sign-flip (exact) | these networks: McNemar p per seed | "
    "these networks: points [95% CI], p (images clustered over seeds) | seeds for 80% power"
)


def table(rows: list[dict], baseline: str, compact: bool = False) -> list[str]:
    """The methods table; ``compact``: without the ensemble and the seconds (for the reference),
    the cost as the ratio to the baseline's CPU seconds (wall where CPU is not recorded)."""
    head = (
        f"| method | seeds | top-1 % [95% CI over seeds] | vs {baseline}, points [95% CI over "
        f"seeds] | {EVIDENCE_HEADER} | "
    )
    if compact:
        lines = [head + f"x {baseline} cost (CPU s) |", "|" + "---|" * 10]
    else:
        lines = [
            head + f"ensemble top-1 % | CPU s (with teachers) | x {baseline} CPU | wall s "
            f"(with teachers) | x {baseline} wall |",
            "|" + "---|" * 14,
        ]
    for r in rows:
        if not r["seeds"]:
            continue
        x_cpu = f"{r['x_baseline_cpu']:.2f}" if "x_baseline_cpu" in r else "—"
        x_wall = f"{r['x_baseline_total']:.2f}" if "x_baseline_total" in r else "—"
        cells = [r["entry"], seeds_text(r["seeds"]), pct(r["top1"]), *evidence_cells(r)]
        if compact:
            cells.append(x_cpu if "x_baseline_cpu" in r else f"{x_wall} (wall)")
        else:
            cpu = f"{r['cpu_seconds_total']:.0f}" if "cpu_seconds_total" in r else "n/a"
            total = f"{r['seconds_total']:.0f}"
            cells += [f"{100 * r['ensemble_top1']:.2f}", cpu, x_cpu, total, x_wall]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(row: dict[str, Any], baseline: str) -> str | None:
    """What the row shows about the method, in one line a reviewer would sign."""
    if "difference" not in row:
        return None
    d, pw, nets = row["difference"], row["power"], row["these_networks"]
    n, mean = d["seeds"], 100 * d["mean"]
    if d["p_value"] is None:
        shown = f"not tested at the seed level ({d['reason']})"
    elif d["p_value"] < 0.05:
        side = "better" if mean > 0 else "worse"
        return (
            f"{row['entry']}: {side} than {baseline} over {n} seeds, {pct(d, True)} points, "
            f"t-test {p_is(d['p_value'])}."
        )
    else:
        shown = f"not shown at {n} seeds ({mean:+.2f} points, t-test {p_is(d['p_value'])})"
    need, now = pw["seeds_80"], pw.get("power")
    more = f"; about {need} seeds would be needed for {mean:+.2f} at 80% power" if need else ""
    if need and now is not None:
        more += f" ({n} seeds find it {100 * now:.0f}% of the time)"
    networks = (
        f"; these networks differ (images clustered over seeds, {p_is(nets['p_value'])})"
        if nets["p_value"] is not None and nets["p_value"] < 0.05
        else ""
    )
    return f"{row['entry']}: {shown}{more}{networks}."


def plot(rows_by_regime: dict[str, list[dict]], baseline: str, path: Path) -> None:
    """Seed-level top-1 difference from the baseline with its t-based 95% CI, one panel per
    regime (rows without a CI, below 3 seeds, are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def has_ci(r: dict) -> bool:
        return isinstance(r.get("difference"), dict) and r["difference"].get("low") is not None

    panels = {k: [r for r in v if has_ci(r) and "mean" in r["difference"]] for k, v in
              rows_by_regime.items()}  # fmt: skip
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False, constrained_layout=True
    )
    for ax, (regime, rows) in zip(axes[0], panels.items(), strict=True):
        names = [f"{r['entry']} ({len(r['seeds'])})" for r in rows]
        est = np.array([100 * r["difference"]["mean"] for r in rows])
        low = est - np.array([100 * r["difference"]["low"] for r in rows])
        high = np.array([100 * r["difference"]["high"] for r in rows]) - est
        colors = ["tab:green" if r["difference"]["p_value"] < 0.05 else "tab:gray" for r in rows]
        ax.barh(names, est, xerr=[low, high], color=colors, capsize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(regime)
        ax.set_xlabel(f"top-1 minus {baseline}, points (t 95% CI over seeds)")
        ax.invert_yaxis()
    fig.savefig(path, dpi=110)
    plt.close(fig)
