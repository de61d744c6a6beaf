"""What ``onedge run`` prints at the end: a table per target, the report and the registry."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipeline.flows.chain import PipelineResult
from pipeline.model_registry.target_versions import PerTargetOutcome
from pipeline.report.rows import COLUMNS
from pipeline.report.targets import budget_text
from targets.table import VERDICT_STYLE


def print_run(result: PipelineResult, seconds: float, console: Console) -> None:
    for target in dict.fromkeys(row.target for row in result.rows):
        table = Table(title=f"{target}: every artifact against the PyTorch FP32 student")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in COLUMNS[:3] else "right")
        for row in (r for r in result.rows if r.target == target):
            cells = row.cells()
            style = VERDICT_STYLE.get(row.verdict or "")
            if style:
                cells[COLUMNS.index("verdict")] = f"[{style}]{row.verdict}[/]"
            table.add_row(*cells)
        console.print(table)
    console.print(f"report:   {result.report_md}  and  {result.report_html}", soft_wrap=True)
    outcome = result.registry
    if outcome is None:
        console.print("registry: disabled (registry.enabled: false)", soft_wrap=True)
    elif isinstance(outcome, PerTargetOutcome):
        print_per_target(outcome, console)
    else:
        mine = [alias for alias, version in outcome.aliases.items() if version == outcome.version]
        console.print(
            f"registry: {outcome.tracking_uri}, model {outcome.model_name} version "
            f"{outcome.version} ({', '.join(mine) or 'no alias'}): "
            + "; ".join(outcome.decision.reasons),
            soft_wrap=True,
        )
    if result.timings is not None:
        t = result.timings
        steps = ", ".join(f"{name} {sec:.1f} s" for name, sec in t.steps.items())
        console.print(
            f"time:     {steps}; Prefect {t.prefect_s:.1f} s, MLflow {t.mlflow_s:.1f} s",
            soft_wrap=True,
        )
    console.print(f"done in {seconds:.0f} s; files in {result.out_dir}", soft_wrap=True)


def print_per_target(outcome: PerTargetOutcome, console: Console) -> None:
    """One line per target: its budget, the pick, the version and the aliases it holds."""
    console.print(f"registry: model {outcome.model_name}, one pick per target", soft_wrap=True)
    for spec, t in outcome.targets.items():
        r, c = t.registered, t.choice
        if c.pick is None or r is None:
            console.print(f"  {spec} ({budget_text(c)}): nothing fits", soft_wrap=True)
            continue
        mine = [a for a, v in r.aliases.items() if v == r.version]
        console.print(
            f"  {spec} ({budget_text(c)}): {c.pick}, top-1 {100 * c.pick_top1:.2f}%, "
            f"p99 {c.pick_p99_ms:.3f} ms -> version {r.version} ({', '.join(mine) or 'no alias'}): "
            + "; ".join(r.decision.reasons),
            soft_wrap=True,
        )
