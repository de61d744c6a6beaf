"""The ``onedge`` command line. Every command is a thin call of a plain function."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onedge.errors import ConfigError, OnedgeError
from onedge.registry import Registry

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts hold literal brackets: ssh://user@host:port[/jetson]
    help="onedge: ONE online distillation to validated students on edge boards.",
)
console = Console()
NOTHING_PASSED = 3  # onedge run: no artifact passed its gates (the report is still written)

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


@app.command()
def train(
    config: ConfigOpt,
    out: OutOpt,
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="go on at the stage and epoch where OUT stopped")
    ] = False,
) -> None:
    """Train every stage of the method (teachers first) and write checkpoint, metrics and curves."""
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


def list_registry(reg: Registry) -> None:
    for name in reg.names():
        entry = reg.get(name)
        doc = (entry.__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name:<14}[/] {doc[0] if doc else ''}")


@app.command()
def datasets() -> None:
    """List the registered data sets."""
    from training.data import DATASETS

    list_registry(DATASETS)


@app.command()
def models() -> None:
    """List the registered model families."""
    from training.models import MODELS

    list_registry(MODELS)


@app.command()
def methods() -> None:
    """List the registered training methods."""
    from training.methods import METHODS

    list_registry(METHODS)


data_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Look at a data set before training."
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(config: ConfigOpt, overrides: SetOpt = None) -> None:
    """Scan an image folder: images per class and split, shorter sides, modes, bad files,
    classes missing from a split, identical images in two splits.

    Exits 2 on what would stop ``onedge run`` (a bad file unless data.on_bad_image=skip, a
    class without images, duplicates across splits unless data.allow_duplicates=true).
    """
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


def export_settings(
    config: Path | None,
    overrides: list[str] | None,
    formats: str | None,
    precisions: str | None,
    branch: int | None,
    branches: str | None = None,
):
    """The config's export section with the command-line options on top."""
    from pipeline.config import load_config

    sets = list(overrides or [])
    pairs = (("formats", formats), ("precisions", precisions), ("branch", branch))
    for key, value in (*pairs, ("branches", branches)):
        if value is not None:
            sets.append(f"export.{key}={value}")
    return load_config(config, sets).export


@app.command()
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
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")] = None,
    overrides: SetOpt = None,
) -> None:
    """Extract one branch (or several students) and write a folder per format and precision."""
    from export.exporter import export_checkpoint

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


@app.command()
def validate(
    artifacts: Annotated[Path, typer.Option("--artifacts", help="export folder (or one artifact)")],
    target: Annotated[str, typer.Option(help="local-cpu or ssh://user@host:port[/jetson]")],
    out: OutOpt,
    eval_set: Annotated[Path | None, typer.Option(help="default: ARTIFACTS/eval.npz")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")] = None,
    overrides: SetOpt = None,
    known_hosts: Annotated[Path | None, typer.Option(help="ssh: known_hosts file")] = None,
    key: Annotated[Path | None, typer.Option(help="ssh: private key")] = None,
    fingerprint: Annotated[str | None, typer.Option(help="ssh: pinned host key SHA256:...")] = None,
    python: Annotated[str | None, typer.Option(help="ssh: Python on the board")] = None,
) -> None:
    """Measure every artifact on a target, apply the gates, write OUT/report.json.

    Settings and gates come from the config's validate section; exits 1 when a gate fails.
    """
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


@app.command("int8-debug")
def int8_debug(
    artifacts: Annotated[Path, typer.Option("--artifacts", help="export folder")],
    target: Annotated[str, typer.Option(help="local-cpu or ssh://user@host:port[/jetson]")],
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
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")] = None,
    overrides: SetOpt = None,
) -> None:
    """Below the agreement gate on TARGET: rank the INT8 graph's nodes by the flips, keep the worst
    in float until the gate holds, write ARTIFACT-repaired beside it and validate it there."""
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


@app.command()
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
    from pipeline.durations import clear_mark, mark_called
    from pipeline.prefect_server import start_prefect_server

    server = start_prefect_server()  # starts while torch and the flows are imported
    from pipeline.config import load_config
    from pipeline.errors import NothingPassedError
    from pipeline.flows import edge_pipeline
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


RunDirOpt = Annotated[
    Path | None, typer.Option("--run", help="pipeline run folder (its config names the registry)")
]
UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI"),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="registered model name")]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="a validate target: move its champion-<target> alias instead"),
]


def find_registry(run_dir: Path | None, uri: str | None):
    """(tracking URI, the run's config or None): --run DIR, else --tracking-uri or the env."""
    cfg = None
    if run_dir is not None:
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


@app.command()
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
    from pipeline.model_registry.manual import promote as promote_version
    from pipeline.model_registry.target_versions import promote_for_target, target_alias

    client, name, alias = open_registry(run_dir, tracking_uri, model)
    if target is not None:
        alias = target_alias("champion", target)
        aliases = promote_for_target(client, name, str(version), target, force=force)
    else:
        aliases = promote_version(client, name, str(version), alias, force=force)
    console.print(f"{name}: {alias} -> version {aliases[alias]}")


@app.command()
def rollback(
    run_dir: RunDirOpt = None,
    tracking_uri: UriOpt = None,
    model: ModelOpt = None,
    target: TargetOpt = None,
) -> None:
    """Give the champion alias back to the previous champion."""
    from pipeline.model_registry.manual import rollback as rollback_champion
    from pipeline.model_registry.target_versions import target_alias

    client, name, alias = open_registry(run_dir, tracking_uri, model)
    if target is not None:
        alias = target_alias("champion", target)
    aliases = rollback_champion(client, name, alias)
    console.print(f"{name}: {alias} -> version {aliases[alias]} (rolled back)")


@app.command()
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


SET_FLAGS = ("--set", "-s")


def expand_set_pairs(argv: list[str]) -> list[str]:
    """``--set a=1 b=2`` -> ``--set a=1 --set b=2``: a flag takes every key=value after it.

    A bare word after a run of pairs is refused with one line (no command takes positional
    arguments), so a forgotten ``=`` is not silently dropped.
    """
    out: list[str] = []
    expecting, in_run = False, False
    for token in argv:
        if expecting:  # the flag's own value, given to Click unchanged
            out.append(token)
            expecting, in_run = False, True
        elif token in SET_FLAGS:
            out.append(token)
            expecting = True
        elif token.startswith("--set="):
            out.append(token)
            in_run = True
        elif in_run and not token.startswith("-"):
            if "=" not in token:
                raise ConfigError(
                    f"--set takes key=value pairs; {token!r} is not one "
                    "(e.g. --set train.epochs=5 train.lr=0.05)"
                )
            out += ["--set", token]
        else:
            out.append(token)
            in_run = False
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors onedge raises on purpose print one line and exit non-zero."""
    try:
        args = expand_set_pairs(list(sys.argv[1:] if argv is None else argv))
        status = app(args=args, standalone_mode=False)  # an Exit(n) comes back as n
    except OnedgeError as exc:
        message = f"[bold red]error:[/] {escape(str(exc))}"  # messages may hold [brackets]
        Console(stderr=True).print(message, highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return status if isinstance(status, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
