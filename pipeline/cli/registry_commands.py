"""The registry's commands: promote a version by hand, roll the champion back.

Each command imports the MLflow side inside its body: ``onedge --help`` imports no MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onedge.errors import ConfigError
from pipeline.cli.options import RunDirOpt, UriOpt, console

ModelOpt = Annotated[str | None, typer.Option("--model", help="registered model name")]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="a validate target: move its champion-<target> alias instead"),
]


def find_registry(run_dir: Path | None, uri: str | None):
    """(tracking URI, the run's config or None): --run DIR, else --tracking-uri or the env."""
    cfg = None
    if run_dir is not None:
        # inside: --help stays light (the config imports torch, tracking imports MLflow)
        from pipeline.config import load_config
        from pipeline.model_registry.tracking import tracking_uri
        from pipeline.run_folder import RunFolder

        folder = RunFolder(Path(run_dir).resolve())
        cfg = load_config(folder.config)
        uri = uri or tracking_uri(cfg, folder)
    if uri is None:
        raise ConfigError(
            "which registry? give --run DIR (a pipeline run folder) or --tracking-uri URI "
            "(or set MLFLOW_TRACKING_URI)"
        )
    return uri, cfg


def open_registry(run_dir: Path | None, uri: str | None, model: str | None):
    """(client, model name, champion alias) from a run folder or a tracking URI."""
    # inside: --help stays light (MLflow)
    from pipeline.config import check_model_name
    from pipeline.model_registry.manual import model_name_in
    from pipeline.model_registry.tracking import connect

    if model is not None:
        check_model_name(model)
    uri, cfg = find_registry(run_dir, uri)
    alias = "champion"
    if cfg is not None:
        model = model or cfg.model_name()
        alias = cfg.registry.champion_alias
    client = connect(uri)
    return client, model_name_in(client, model), alias


def promote(
    version: Annotated[int, typer.Option("--version", help="model version to make champion")],
    force: Annotated[
        bool,
        typer.Option(
            help="promote even if it failed a gate (never one that failed its hash check)"
        ),
    ] = False,
    run_dir: RunDirOpt = None,
    tracking_uri: UriOpt = None,
    model: ModelOpt = None,
    target: TargetOpt = None,
) -> None:
    """Make a registered version the champion (the previous one is kept for rollback)."""
    # inside the command: --help stays light (MLflow)
    from pipeline.model_registry.manual import promote as promote_version
    from pipeline.model_registry.target_versions import promote_for_target, target_alias

    client, name, alias = open_registry(run_dir, tracking_uri, model)
    if target is not None:
        alias = target_alias("champion", target)
        aliases = promote_for_target(client, name, str(version), target, force=force)
    else:
        aliases = promote_version(client, name, str(version), alias, force=force)
    console.print(f"{name}: {alias} -> version {aliases[alias]}")


def rollback(
    run_dir: RunDirOpt = None,
    tracking_uri: UriOpt = None,
    model: ModelOpt = None,
    target: TargetOpt = None,
) -> None:
    """Give the champion alias back to the previous champion."""
    # inside the command: --help stays light (MLflow)
    from pipeline.model_registry.manual import rollback as rollback_champion
    from pipeline.model_registry.target_versions import target_alias

    client, name, alias = open_registry(run_dir, tracking_uri, model)
    if target is not None:
        alias = target_alias("champion", target)
    aliases = rollback_champion(client, name, alias)
    console.print(f"{name}: {alias} -> version {aliases[alias]} (rolled back)")
