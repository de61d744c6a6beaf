"""Student rows of bench/methods.py: a family of students, each against its width trained alone.

A family entry (method ``student-ensemble``, docs/METHODS.md §2) trains N students of widths
w_j in one run. Its twins are runs of ``TWIN_OF[method]`` (vanilla) at each width alone: the
entry ``vanilla:model.width=<W * w_j>``, W the family's ``model.width``, with the family entry's
other overrides except the students' own (``method.*``, ``model.branches``). Twins are ordinary
entries of the same results file, trained after the family of each seed with the same epochs,
seed, split and schedule, saved and resumed like every run, and shared by the family variants
(``student-ensemble`` and ``student-ensemble:method.student_ce=true`` meet the same twins).

Per width the summary gives the student's test top-1 and its twin's (mean over the seeds both
have, t-based 95% CI), the seed-level paired difference (student minus twin: t-CI, t-test p,
exact sign-flip p), then the same for these networks only (per-seed exact McNemar, seeds x
images with images clustered over seeds), the seeds needed at 80% power, both networks'
parameters and MACs; and the family's training time against the twins' summed. The twin is the plain network at that width: its stem is
scaled too, where the students share a full-width stem (parameters and MACs are in the table).

:func:`import_students` turns the results file of the former bench/students.py
(``students_<regime>.json``: ``family[-tag]@<seed>`` and ``vanilla-w<w>@<seed>`` records) into
records of this layout, so its runs are summarised here without training them again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.method_tables import (
    EVIDENCE_HEADER,
    Results,
    check_pairable,
    evidence_cells,
    pack,
    paired_evidence,
    pct,
    seeds_text,
    unpack,
)
from training.stats import seed_mean

# family method -> the method that trains each width alone
TWIN_OF = {"student-ensemble": "vanilla"}
# overrides that belong to the students, not to a network trained alone
STUDENT_KEYS = ("method.", "model.branches=", "model.width=")


def parse_entry(entry: str) -> tuple[str, list[str]]:
    """``name[:k=v,k=v]`` -> (method name, overrides)."""
    name, _, rest = entry.partition(":")
    return name, [item for item in rest.split(",") if item]


def twin_entry(entry: str, width: float, twin_method: str) -> str:
    """The entry that trains ``width`` (absolute ``model.width``) alone for a family ``entry``."""
    _, overrides = parse_entry(entry)
    kept = [o for o in overrides if not o.startswith(STUDENT_KEYS)]
    return f"{twin_method}:" + ",".join([*kept, f"model.width={width:g}"])


def twin_entries(entry: str, record: dict[str, Any] | None) -> list[str]:
    """One twin entry per student of a family ``entry`` (none for other methods, or before the
    family's first run is saved: its widths come from the record)."""
    name, _ = parse_entry(entry)
    twin = TWIN_OF.get(name)
    if twin is None or record is None:
        return []
    return [twin_entry(entry, record["model_width"] * w, twin) for w in record["widths"]]


def branch_cost(checkpoint: Path) -> list[list[int]]:
    """[parameters, MACs] of every extracted branch of a checkpoint."""
    from training.checkpoint import load_checkpoint
    from training.models import count_macs, count_parameters

    loaded = load_checkpoint(checkpoint)
    s = loaded.spec
    shape = (1, s.in_channels, s.image_size, s.image_size)
    out = []
    for k in range(loaded.model.num_branches):
        student = loaded.model.extract(k)
        out.append([count_parameters(student), count_macs(student, shape)])
    return out


def summarise_family(results: Results, entry: str, seeds: list[int]) -> dict[str, Any] | None:
    """Each student of ``entry`` against its twin on the seeds both have, and the training time
    of the family against its twins summed (seeds that have every twin). None for an entry that
    is no family, or before its first run."""
    runs = {s: r for s in seeds if (r := results.get(entry, s)) is not None}
    if parse_entry(entry)[0] not in TWIN_OF or not runs:
        return None
    first = next(iter(runs.values()))
    twins = twin_entries(entry, first)
    rows = []
    for j, (w, twin) in enumerate(zip(first["widths"], twins, strict=True)):
        paired = [s for s in runs if results.get(twin, s) is not None]
        if not paired:
            continue
        for s in paired:
            check_pairable(results.get(twin, s), runs[s], f"{entry} student {j} against {twin}")
        size = first["images"]
        student = np.stack([unpack(runs[s]["branch_correct"][j], size) for s in paired])
        alone = np.stack([unpack(results.get(twin, s)["branch_correct"][0], size) for s in paired])
        rows.append(
            {
                "student": j,
                "width": w,
                "twin": twin,
                "seeds": paired,
                "student_top1": seed_mean(student.mean(axis=1)).to_dict(),
                "twin_top1": seed_mean(alone.mean(axis=1)).to_dict(),
                **paired_evidence(alone, student, paired),
                "student_cost": runs[paired[0]]["cost"][j],
                "twin_cost": results.get(twin, paired[0])["cost"][0],
            }
        )
    both = [s for s in runs if all(results.get(t, s) is not None for t in twins)]
    together = [runs[s]["seconds_total"] for s in both]
    alone_s = [sum(results.get(t, s)["seconds_total"] for t in twins) for s in both]
    training = {
        "seeds": both,
        "family_seconds": float(np.mean(together)) if both else None,
        "widths_alone_seconds": float(np.mean(alone_s)) if both else None,
    }
    widths = {"widths": first["widths"], "model_width": first["model_width"]}
    return {**widths, "rows": rows, "training": training}


def family_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| student | width | seeds | top-1 % [95% CI over seeds] | alone (vanilla) top-1 % | "
        f"student - alone, points [95% CI over seeds] | {EVIDENCE_HEADER} | "
        "params / MACs (student) | params / MACs (alone) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if not summary["rows"]:
        return ["No width trained alone is saved yet."]
    for r in summary["rows"]:
        (sp, sm), (tp, tm) = r["student_cost"], r["twin_cost"]
        cells = [
            f"s{r['student']}",
            f"{r['width']:g}",
            seeds_text(r["seeds"]),
            pct(r["student_top1"]),
            pct(r["twin_top1"]),
            *evidence_cells(r),
            f"{sp:,} / {sm:,}",
            f"{tp:,} / {tm:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    t = summary["training"]
    if t["family_seconds"] is not None:
        lines += [
            "",
            f"Training time (mean over seeds {t['seeds']}): the family in one run "
            f"{t['family_seconds']:.0f} s; its {len(summary['rows'])} widths trained alone "
            f"{t['widths_alone_seconds']:.0f} s in all "
            f"({t['family_seconds'] / t['widths_alone_seconds']:.2f}x).",
        ]
    return lines


def import_students(
    old: dict[str, Any], families: dict[str, str], model_width: float, runs: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Records of this layout, by key (``<entry>@seed<s>``), from a students_<regime>.json.

    ``families`` maps each family name of the old file (``family``, ``family-<tag>``) to its
    entry here (``student-ensemble``, ``student-ensemble:method.student_ce=true``); a family
    left out is an error. ``model_width`` is the family's ``model.width`` (its twins' widths are
    that times w). The old records lack the deployed student and the ensemble; they are read from
    ``runs/<family>-seed<s>/`` (``test_predictions.json``, ``metrics.json``) when that folder is
    given and holds them, otherwise the family gets no row in the methods table (its student rows
    need only what the old file has). Training time is the old ``seconds`` (epoch seconds summed).
    """
    from onedge.errors import ConfigError

    out: dict[str, dict[str, Any]] = {}
    for key, rec in old["runs"].items():
        name, _, seed_text = key.rpartition("@")
        seed = int(seed_text)
        size = rec["images"]
        base = {
            "seed": seed,
            "folder": f"{name}-seed{seed}",
            "split_seed": 0,
            "images": size,
            "branch_correct": rec["correct"],
            "branch_top1": rec["top1"],
            "widths": rec["widths"],
            "cost": rec["cost"],
            "seconds_per_epoch": rec["seconds"] / rec["epochs"],
            "epochs": rec["epochs"],
            "seconds_total": rec["seconds"],
            "teacher_seconds": 0.0,
            "imported": True,
        }
        if name.startswith("vanilla-w"):
            width = model_width * float(name.removeprefix("vanilla-w"))
            entry = twin_entry("student-ensemble", width, TWIN_OF["student-ensemble"])
            base.update(
                model_width=width,
                deployed_top1=rec["top1"][0],
                ensemble_top1=rec["top1"][0],
                deployed_correct=rec["correct"][0],
                ensemble_correct=rec["correct"][0],
                parameters_student=rec["cost"][0][0],
            )
        elif name in families:
            entry = families[name]
            base["model_width"] = model_width
            base.update(_deployed(runs / base["folder"] if runs else None, rec))
        else:
            raise ConfigError(
                f"{key}: no entry for family {name!r}; name it, e.g. "
                f"--family {name}=student-ensemble:method.student_ce=true (the old file's last "
                f"command: {old.get('command', 'not recorded')})"
            )
        name_here, _ = parse_entry(entry)
        out[f"{entry}@seed{seed}"] = {"entry": entry, "method": name_here, **base}
    return out


def _deployed(run_dir: Path | None, rec: dict[str, Any]) -> dict[str, Any]:
    """The deployed student and the ensemble of an old family record, from its run folder."""
    if run_dir is None or not (run_dir / "test_predictions.json").is_file():
        return {}
    preds = json.loads((run_dir / "test_predictions.json").read_text())
    labels = np.asarray(preds["labels"])
    deployed = np.asarray(preds["deployed"]) == labels
    ensemble = np.asarray(preds["ensemble"]) == labels
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        branch = int(json.loads(metrics_path.read_text())["deployed_branch"])
    else:  # the first branch whose predictions are the deployed ones
        branch = next(k for k, p in enumerate(preds["branches"]) if p == preds["deployed"])
    return {
        "split_seed": int(preds.get("split_seed", 0)),
        "deployed_top1": float(deployed.mean()),
        "ensemble_top1": float(ensemble.mean()),
        "deployed_correct": pack(deployed),
        "ensemble_correct": pack(ensemble),
        "deployed_branch": branch,
        "parameters_student": rec["cost"][branch][0],
    }
