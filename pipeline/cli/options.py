"""What the ``onedge`` commands share: the console and the options several of them take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML run configuration")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="override config keys: --set train.epochs=5 train.lr=0.05 (several pairs after "
        "one flag, or the flag repeated)",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output folder")]
OptionalConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML run config")
]  # without it, the defaults
RunDirOpt = Annotated[
    Path | None, typer.Option("--run", help="pipeline run folder (its config names the registry)")
]
UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI"),
]
