"""The ``onedge`` command line. Every command is a thin call of a plain function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from training.errors import OnedgeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="onedge: ONE online distillation to validated students on edge boards.",
)
console = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML run configuration")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a config key: --set train.epochs=5 (repeatable)"),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output folder")]


@app.command()
def train(
    config: ConfigOpt,
    out: OutOpt,
    overrides: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/checkpoint.pt")] = False,
) -> None:
    """Train a multi-branch model (ONE or a baseline) and write checkpoint, metrics and curves."""
    from pipeline.config import load_config
    from training.trainer import train as run_training

    cfg = load_config(config, overrides).training_config()
    console.print(
        f"[bold]training[/] {cfg.model.name} x{cfg.model.branches} with [bold]{cfg.method.name}[/] "
        f"on {cfg.data.name} for {cfg.train.epochs} epochs -> {out}"
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


def list_registry(kind: str) -> None:
    if kind == "datasets":
        from training.data import DATASETS as reg
    elif kind == "models":
        from training.models import MODELS as reg
    else:
        from training.methods import METHODS as reg
    for name in reg.names():
        entry = reg.get(name)
        doc = (entry.__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name:<14}[/] {doc[0] if doc else ''}")


@app.command()
def datasets() -> None:
    """List the registered data sets."""
    list_registry("datasets")


@app.command()
def models() -> None:
    """List the registered model families."""
    list_registry("models")


@app.command()
def methods() -> None:
    """List the registered training methods."""
    list_registry("methods")


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors onedge raises on purpose print one line and exit non-zero."""
    try:
        app(args=argv, standalone_mode=False)
    except OnedgeError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
