"""The chain's commands: each step alone (train, export, validate, int8-debug) and the whole run.

Each command imports what it runs inside its body (torch, Prefect, the flows): ``onedge --help``
imports none of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onedge.errors import ConfigError
from pipeline.cli.options import ConfigOpt, OptionalConfigOpt, OutOpt, SetOpt, console

NOTHING_PASSED = 3  # onedge run: no artifact passed its gates (the report is still written)
TargetSpecOpt = Annotated[str, typer.Option(help="local-cpu or ssh://user@host:port[/jetson]")]


def train(
    config: ConfigOpt,
    out: OutOpt,
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="go on at the stage and epoch where OUT stopped")
    ] = False,
) -> None:
    """Train every stage of the method (teachers first) and write checkpoint, metrics and curves."""
    # inside the command: --help stays light (these import torch)
    from pipeline.config import load_config
    from pipeline.data_check import with_run_cache
    from training.stages import method_stages
    from training.trainer import train as run_training

    cfg = with_run_cache(load_config(config, overrides).training_config(), out.resolve())
    specs = method_stages(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 speaks
        console.print(
            f"[bold]training[/] {cfg.model.name} x{cfg.model.branches} with [bold]{cfg.method.name}[/] "
            f"on {cfg.data.name} for {cfg.train.epochs} epochs -> {out}"
            + (f" (stages: {', '.join(s.name for s in specs)})" if len(specs) > 1 else "")
        )
    result = run_training(cfg, out, resume=resume)
    if result.metrics:
        print_train_metrics(result.metrics, out)


def print_train_metrics(m: dict, out: Path) -> None:
    table = Table(title="test top-1")
    table.add_column("model")
    table.add_column("top-1", justify="right")
    for i, acc in enumerate(m["branch_top1"]):
        tag = " (deployed)" if i == m["deployed_branch"] else ""
        table.add_row(f"branch {i}{tag}", f"{100 * acc:.2f}%")
    table.add_row("ensemble", f"{100 * m['ensemble_top1']:.2f}%", style="bold")
    console.print(table)
    console.print(
        f"deployed branch {m['deployed_branch']}: {100 * m['deployed_top1']:.2f}% test top-1, "
        f"{m['parameters_student']:,} parameters ({m['parameters_total']:,} in the whole network); "
        f"{m['seconds_per_epoch']:.1f} s/epoch. Files in {out}"
    )


def export_settings(
    config: Path | None,
    overrides: list[str] | None,
    formats: str | None,
    precisions: str | None,
    branch: int | None,
    branches: str | None = None,
):
    """The config's export section with the command-line options on top."""
    from pipeline.config import load_config  # inside: --help stays light

    sets = list(overrides or [])
    pairs = (("formats", formats), ("precisions", precisions), ("branch", branch))
    for key, value in (*pairs, ("branches", branches)):
        if value is not None:
            sets.append(f"export.{key}={value}")
    return load_config(config, sets).export


def export(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="checkpoint.pt of a training run")
    ],
    out: OutOpt,
    formats: Annotated[str | None, typer.Option(help="onnx,openvino,tensorrt")] = None,
    precisions: Annotated[str | None, typer.Option(help="fp32,fp16,int8")] = None,
    branch: Annotated[int | None, typer.Option(help="branch to export (default: deployed)")] = None,
    branches: Annotated[
        str | None,
        typer.Option(help="deployed, all, or K,L,...: a family's students, s<k>-w<width>- folders"),
    ] = None,
    config: OptionalConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Extract one branch (or several students) and write a folder per format and precision."""
    from export.exporter import export_checkpoint  # inside: --help stays light (torch)

    settings = export_settings(config, overrides, formats, precisions, branch, branches)
    console.print(
        f"[bold]exporting[/] {checkpoint} as {', '.join(settings.formats)} in "
        f"{', '.join(settings.precisions)} -> {out}"
    )
    result = export_checkpoint(checkpoint, out, settings)
    table = Table(title=f"artifacts in {out} (PyTorch FP32 test top-1 {result.reference_top1:.2%})")
    for column in ("artifact", "runs with", "test top-1", "agreement", "max |diff|", "sha256"):
        table.add_column(column)
    for a in result.artifacts:
        table.add_row(
            a.name,
            a.evaluated_with,
            f"{a.test['top1']:.2%}",
            f"{a.test['top1_agreement']:.2%}",
            f"{a.test['max_abs_diff']:.2g}",
            a.sha256[:12],
        )
    console.print(table)
    for failed in result.failed:  # that artifact's failure; the others were exported
        console.print(f"[red]failed[/] {failed['name']}: {failed['reason']}", highlight=False)


def validate(
    artifacts: Annotated[Path, typer.Option("--artifacts", help="export folder (or one artifact)")],
    target: TargetSpecOpt,
    out: OutOpt,
    eval_set: Annotated[Path | None, typer.Option(help="default: ARTIFACTS/eval.npz")] = None,
    config: OptionalConfigOpt = None,
    overrides: SetOpt = None,
    known_hosts: Annotated[Path | None, typer.Option(help="ssh: known_hosts file")] = None,
    key: Annotated[Path | None, typer.Option(help="ssh: private key")] = None,
    fingerprint: Annotated[str | None, typer.Option(help="ssh: pinned host key SHA256:...")] = None,
    python: Annotated[str | None, typer.Option(help="ssh: Python on the board")] = None,
) -> None:
    """Measure every artifact on a target, apply the gates, write OUT/report.json.

    Settings and gates come from the config's validate section; exits 1 when a gate fails.
    """
    # inside the command: --help stays light (the targets import the runtimes' checks)
    from pipeline.config import load_config
    from targets import parse_target, print_report, validate_artifacts

    cfg = load_config(config, overrides).validate
    given = {"known_hosts": known_hosts, "key": key, "fingerprint": fingerprint, "python": python}
    options = {**cfg.boards.get(target, {}), **{k: v for k, v in given.items() if v is not None}}
    if not target.startswith("ssh://") and any(v is not None for v in given.values()):
        raise ConfigError("--known-hosts, --key, --fingerprint and --python are for ssh targets")
    report = validate_artifacts(
        artifacts, parse_target(target, **options), out, cfg.settings, cfg.gates, eval_set
    )
    print_report(report, console)
    console.print(f"report: {out / 'report.json'}", soft_wrap=True)
    if not report.passed:
        raise typer.Exit(1)


def int8_debug(
    artifacts: Annotated[Path, typer.Option("--artifacts", help="export folder")],
    target: TargetSpecOpt,
    artifact: Annotated[str, typer.Option(help="the ONNX INT8 artifact folder, e.g. onnx-int8")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="default: ARTIFACTS/../int8-debug")
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help=".npz of images as the artifact takes them; default: the export's calibration split"
        ),
    ] = None,
    max_nodes: Annotated[
        int, typer.Option(min=1, help="at most this many nodes kept in float")
    ] = 8,
    config: OptionalConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Below the agreement gate on TARGET: rank the INT8 graph's nodes by the flips, keep the worst
    in float until the gate holds, write ARTIFACT-repaired beside it and validate it there."""
    # inside the command: --help stays light (ONNX, ONNX Runtime)
    from pipeline.config import load_config
    from pipeline.int8_debug import int8_debug as debug
    from targets import parse_target

    cfg = load_config(config, overrides).validate
    found = debug(
        artifacts, parse_target(target, **cfg.boards.get(target, {})), artifact,
        out or Path(artifacts).resolve().parent / "int8-debug", cfg.settings, cfg.gates,
        calibration, max_nodes,
    )  # fmt: skip
    shown = "unknown" if found.agreement is None else f"{found.agreement:.2%}"
    console.print(f"{artifact} on {found.target}: agreement {shown} (gate {found.gate:.2%})")
    outcome = found.outcome
    if outcome is None:
        console.print("meets the gate: nothing to repair")
        return
    for kept in outcome.in_float:
        console.print(f"  kept in float: {kept['node']} ({kept['op_type']}): {kept['why']}")
    repaired = found.repaired_report
    if repaired is None:
        console.print("no node could be kept in float: nothing written")
        raise typer.Exit(1)
    result = repaired.result(str(outcome.repaired))
    console.print(
        f"{outcome.repaired}: agreement {result.agreement:.2%} on {found.target} "
        f"({'meets' if outcome.met_gate else 'still below'} the gate; verdict {result.verdict})"
    )
    if not outcome.met_gate:
        raise typer.Exit(1)


def run(config: ConfigOpt, out: OutOpt, overrides: SetOpt = None) -> None:
    """The whole chain (train, export, validate, register, report) as Prefect flows.

    Runs against the Prefect server in PREFECT_API_URL, or else a temporary local one.

    \b
    Exit codes:
      0  a version was registered
      3  nothing passed its gates
      2  bad input (configuration, arguments, files)
      1  internal error
    """
    # The temporary server would report usage to Prefect; a user may turn it back on.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # inside the command, in two blocks: --help stays light, and the server starts before
    # torch and the flows are imported (it starts while they load)
    from pipeline.durations import clear_mark, mark_called
    from pipeline.prefect_server import start_prefect_server

    server = start_prefect_server()
    from pipeline.config import load_config
    from pipeline.errors import NothingPassedError
    from pipeline.flows.chain import edge_pipeline
    from pipeline.report.summary import print_run

    cfg = load_config(config, overrides)
    console.print(
        f"[bold]onedge run[/] {cfg.name}: {cfg.method.name} on {cfg.data.name}, "
        f"{cfg.train.epochs} epochs; targets {', '.join(cfg.validate.targets)} -> {out}"
    )
    start = time.perf_counter()
    mark_called()
    if server is not None:
        server.join()  # the flow must not reach the server before it answers
    wide = console if console.is_terminal else Console(width=max(console.width, 140))
    try:
        result = edge_pipeline(cfg, out)
    except NothingPassedError as exc:
        if exc.result is not None:
            print_run(exc.result, time.perf_counter() - start, wide)
        Console(stderr=True).print(
            f"[bold red]nothing passed:[/] {escape(str(exc))}", soft_wrap=True
        )
        raise typer.Exit(NOTHING_PASSED) from None
    finally:
        clear_mark()  # a flow that never started must not leave its mark to the next one
    print_run(result, time.perf_counter() - start, wide)
