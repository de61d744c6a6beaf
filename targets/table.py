"""A rich table of a validation report, for the terminal."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from targets.base import TargetInfo, ValidationReport

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "skipped": "yellow"}


LATENCY_COLUMNS = ("p50 ms", "p99 ms")


def machine_line(info: TargetInfo) -> str:
    """CPU model and cores, or the board with its L4T release and power mode; then the board's
    fingerprint (instruction set, CPU features, runtime versions)."""
    if info.l4t or info.board:
        parts = [info.board or info.hostname or info.name, info.l4t or "L4T unknown"]
        parts.append(f"power mode {info.power_mode or 'unknown'}")
        if info.clocks_locked is not None:
            parts.append("clocks locked" if info.clocks_locked else "clocks not locked")
        return f"{', '.join(parts)}; {info.fingerprint()}"
    cores = f"{info.cores} cores" if info.cores else "cores unknown"
    where = f"{info.cpu_model or 'CPU unknown'}, {cores} ({info.hostname or info.name})"
    if info.emulated:  # the timings are the emulator's, not the board's
        return f"{where}; {info.fingerprint()}; latency emulated, latency gates skipped"
    return f"{where}; {info.fingerprint()}"


def isa_columns(columns: list[str], info: TargetInfo) -> list[str]:
    """Table headers whose latency columns name the instruction set they were measured on."""
    isa = (info.isa or "ISA unknown") + (", emulated" if info.emulated else "")
    return [f"{c} [{isa}]" if c in LATENCY_COLUMNS else c for c in columns]


def _num(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def render_report(report: ValidationReport) -> Table:
    """One row per artifact; the gates' reasons are printed below it by :func:`print_report`."""
    s = report.settings
    threads = s.threads or "default"
    table = Table(
        title=f"Validation on {report.target}: {machine_line(report.target_info)}",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
        caption=(
            f"latency at batch 1 on {report.target_info.isa or 'an unknown ISA'}, throughput "
            f"at batch {s.batch_size}, threads {threads}; "
            f"timed >= {s.timed_seconds:g} s and >= {s.timed_calls} calls"
        ),
    )
    for column, justify in [
        ("artifact", "left"), ("prec.", "left"),
        ("top-1 %", "right"), ("drop pts", "right"), ("agree %", "right"),
        ("p50 ms", "right"), ("p99 ms", "right"), ("img/s", "right"),
        ("MB", "right"), ("verdict", "left"),
    ]:  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=True)
    for r in report.results:
        lat = r.latency_ms
        verdict = r.verdict or "-"
        table.add_row(
            r.artifact,
            r.precision,
            _num(r.top1, scale=100),
            _num(r.top1_drop, scale=100),
            _num(r.agreement, scale=100),
            _num(lat.p50 if lat else None, 3),
            _num(lat.p99 if lat else None, 3),
            _num(r.throughput, 0),
            _num(r.size_mb),
            f"[{VERDICT_STYLE.get(verdict, '')}]{verdict}[/]" if r.verdict else "-",
        )
    return table


def print_report(report: ValidationReport, console: Console | None = None) -> None:
    """Print the table, the reasons of every failed or skipped artifact, and a summary line."""
    console = console or Console()
    console.print(render_report(report))
    for r in report.results:
        for reason in r.reasons:
            style = VERDICT_STYLE.get(r.verdict or "", "")
            console.print(f"[{style}]{r.verdict}[/] {r.artifact}: {reason}", highlight=False)
    if report.passed:
        console.print("[bold green]all measured artifacts passed the gates[/]")
    else:
        failed = [r.artifact for r in report.results if r.verdict == "fail"]
        console.print(f"[bold red]failed the gates:[/] {', '.join(failed) or 'none measured'}")
