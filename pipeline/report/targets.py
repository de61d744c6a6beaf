"""The report's sections for a family of students and per-target choices.

A table of the students (width, parameters, MACs, test top-1), and per target: every artifact's
top-1 against p50 latency with the Pareto front, the budget line and the pick (a plot and a
table), and what the registry did with the pick.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import RunConfig
from pipeline.model_registry.per_target import TargetChoice, choose_per_target
from pipeline.model_registry.target_versions import PerTargetOutcome
from pipeline.run_folder import RunFolder, slug
from targets.base import ValidationReport
from targets.table import isa_columns


def student_rows(exported: dict, metrics: dict) -> list[list[str]]:
    """One row per exported student: branch, width, parameters, MACs, test top-1 (PyTorch)."""
    top1 = metrics.get("branch_top1", [])
    rows = []
    for s in exported.get("students", []):
        cost, k = s.get("student", {}), s.get("branch")
        acc = f"{100 * top1[k]:.2f}" if isinstance(k, int) and k < len(top1) else "-"
        rows.append([f"s{k}", f"{s.get('width', 1.0):g}", f"{cost.get('parameters', 0):,}",
                     f"{cost.get('macs', 0):,}", acc])  # fmt: skip
    return rows


def plot_target(report: ValidationReport, choice: TargetChoice, path: Path) -> Path:
    """Top-1 against p50 for one target: the front, the p99 budget line and the pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = [r for r in report.results if r.top1 is not None and r.latency_ms is not None]
    for r in points:
        on_front = r.artifact in choice.front
        ax.scatter(r.latency_ms.p50, 100 * r.top1, s=60, zorder=3,
                   color="tab:red" if on_front else "tab:gray")  # fmt: skip
        ax.annotate(r.artifact, (r.latency_ms.p50, 100 * r.top1), fontsize=6, alpha=0.8)
    front = sorted((r.latency_ms.p50, 100 * r.top1) for r in points if r.artifact in choice.front)
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="tab:red", lw=1.2, label="Pareto front")
    if choice.budget.max_p99_ms is not None:
        ax.axvline(choice.budget.max_p99_ms, color="tab:blue", ls="--", label="p99 budget")
    picked = next((r for r in points if r.artifact == choice.pick), None)
    if picked is not None:
        ax.scatter(picked.latency_ms.p50, 100 * picked.top1, marker="*", s=300, zorder=4,
                   color="gold", edgecolors="black", label=f"pick: {picked.artifact}")  # fmt: skip
    isa = report.target_info.isa or "ISA unknown"
    ax.set(title=report.target, xlabel=f"p50 latency at batch 1 (ms, log) on {isa}",
           ylabel="test top-1 (%)")  # fmt: skip
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def budget_text(choice: TargetChoice) -> str:
    b = choice.budget
    parts = [f"p99 <= {b.max_p99_ms:g} ms" if b.max_p99_ms is not None else None,
             f"size <= {b.max_size_mb:g} MB" if b.max_size_mb is not None else None,
             f"top-1 >= {100 * b.min_top1:.2f}%" if b.min_top1 is not None else None]  # fmt: skip
    return ", ".join(p for p in parts if p) or "no budget (gates only)"


def target_blocks(
    config: RunConfig, run: RunFolder, reports: dict[str, ValidationReport]
) -> list[tuple]:
    """Per target: the choice, its plot and table; then what the registry did per target."""
    choices = choose_per_target(reports.values(), config.validate.budgets)
    blocks: list[tuple] = [("h2", "Per-target choice")]
    for spec, report in reports.items():
        choice = choices[report.target]
        plot = plot_target(report, choice, run.root / f"target-{slug(spec)}.png")
        pick = (
            f"pick **{choice.pick}** ({100 * choice.pick_top1:.2f}% top-1, p99 "
            f"{choice.pick_p99_ms:.3f} ms on {report.target_info.isa or 'an unknown ISA'})"
            if choice.pick
            else "nothing fits: no pick"
        )
        rows = []
        for r in report.results:
            if r.top1 is None or r.latency_ms is None:
                continue
            mark = (
                "pick"
                if r.artifact == choice.pick
                else "; ".join(choice.excluded.get(r.artifact, []))
            )
            rows.append([r.artifact, f"{100 * r.top1:.2f}", f"{r.latency_ms.p50:.3f}",
                         f"{r.latency_ms.p99:.3f}", f"{r.size_mb or 0:.3f}",
                         "yes" if r.artifact in choice.front else "", mark])  # fmt: skip
        blocks += [
            ("p", f"**{spec}**: budget {budget_text(choice)}; {pick}."),
            ("img", f"choice on {spec}", plot),
            (
                "table",
                isa_columns(
                    ["artifact", "top-1 %", "p50 ms", "p99 ms", "MB", "front", "choice"],
                    report.target_info,
                ),
                rows,
            ),
        ]
    return blocks


def per_target_registry_lines(path: Path) -> list[str]:
    """What ``registry-targets.json`` says: per target, version, aliases and decision."""
    if not path.is_file():
        return ["not registered (registry.enabled is false, or the registry step did not run)"]
    outcome = PerTargetOutcome.model_validate_json(path.read_text())
    lines = []
    for spec, t in outcome.targets.items():
        r = t.registered
        if r is None:
            lines.append(f"{spec}: nothing fits its budget and gates; no version")
            continue
        mine = [a for a, v in r.aliases.items() if v == r.version]
        lines.append(
            f"{spec}: {r.artifact} as `{r.model_name}` version **{r.version}** "
            f"({', '.join(mine) or 'no alias'}), sha256 `{r.sha256[:16]}...` "
            f"(registered = validated): " + "; ".join(r.decision.reasons)
        )
    return lines
