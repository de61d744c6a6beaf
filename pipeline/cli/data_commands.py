"""The commands that look at things: what is registered (data sets, model families, methods),
a data set before training (data check), and what a model says of image files (predict).

Each command imports what it reads inside its body: ``onedge --help`` imports no torch or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onedge.errors import ConfigError
from onedge.registry import Registry
from pipeline.cli.options import ConfigOpt, RunDirOpt, SetOpt, UriOpt, console
from pipeline.cli.registry_commands import find_registry

data_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Look at a data set before training."
)


def list_registry(reg: Registry) -> None:
    for name in reg.names():
        entry = reg.get(name)
        doc = (entry.__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name:<14}[/] {doc[0] if doc else ''}")


def datasets() -> None:
    """List the registered data sets."""
    from training.data import DATASETS  # inside: --help stays light (torch)

    list_registry(DATASETS)


def models() -> None:
    """List the registered model families."""
    from training.models import MODELS  # inside: --help stays light (torch)

    list_registry(MODELS)


def methods() -> None:
    """List the registered training methods."""
    from training.methods import METHODS  # inside: --help stays light (torch)

    list_registry(METHODS)


@data_app.command("check")
def data_check(config: ConfigOpt, overrides: SetOpt = None) -> None:
    """Scan an image folder: images per class and split, shorter sides, modes, bad files,
    classes missing from a split, identical images in two splits.

    Exits 2 on what would stop ``onedge run`` (a bad file unless data.on_bad_image=skip, a
    class without images, duplicates across splits unless data.allow_duplicates=true).
    """
    # inside the command: --help stays light (torch)
    from pipeline.config import load_config
    from training.data.folder import prepare_folder
    from training.image_check import enforce, print_check

    cfg = load_config(config, overrides)
    if cfg.data.name != "imagefolder":
        raise ConfigError(f"data check scans image folders (data.name: imagefolder), not {cfg.data.name!r}")  # fmt: skip
    prepared = prepare_folder(cfg.data)
    print_check(prepared.check, console)
    enforce(prepared.check, cfg.data)
    total = sum(sum(per.values()) for per in prepared.check.images.values())
    console.print(f"data check passed: {total} images in {len(prepared.check.classes)} classes")


def predict(
    images: Annotated[
        list[Path], typer.Argument(help="image files, any size and format (JPEG, PNG, WebP, ...)")
    ],
    artifact: Annotated[
        str,
        typer.Option(
            "--artifact",
            help="an artifact folder (RUN/export/onnx-int8), or a registered version: "
            "models:/NAME@ALIAS or models:/NAME/VERSION",
        ),
    ],
    run_dir: RunDirOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Class index, name and probability of each image file (one tab-separated line each), by
    the eval transform the model records."""
    # inside the command: --help stays light (MLflow, the runtimes)
    from pipeline.model_registry.tracking import connect
    from pipeline.predict import artifact_folder, downloaded_artifact, predict_files

    if artifact.startswith("models:/"):
        uri, _ = find_registry(run_dir, tracking_uri)
        with downloaded_artifact(connect(uri), uri, artifact) as folder:
            predictions = predict_files(folder, images)
    else:
        predictions = predict_files(artifact_folder(Path(artifact)), images)
    typer.echo("image\tclass\tname\tprobability")  # plain text: rich would expand the tabs
    for p in predictions:  # one tab-separated line per file: easy to read and to parse
        typer.echo(f"{p.image}\t{p.class_index}\t{p.class_name}\t{p.probability:.4f}")
