"""The chain: train, export, validate, promote in turn on one config, then the report.

See :mod:`pipeline.flows` for what the flows share and how each also runs alone.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from prefect.utilities.annotations import quote
from rich.console import Console

from onedge.strict import StrictModel
from pipeline import run_folder
from pipeline.config import ConfigArg, RunConfig
from pipeline.data_check import check_run_data
from pipeline.durations import StepTimes, Stopwatch
from pipeline.errors import NothingPassedError, PipelineError
from pipeline.flows.export_flow import export_flow
from pipeline.flows.handoff import OpenedRun
from pipeline.flows.limits import transient_fault
from pipeline.flows.promote_flow import promote_flow
from pipeline.flows.train_flow import train_flow
from pipeline.flows.validate_flow import validate_flow
from pipeline.model_registry.promotion import gather_evidence
from pipeline.model_registry.register import RegistryOutcome, attach_files
from pipeline.model_registry.target_versions import PerTargetOutcome
from pipeline.model_registry.tracking import connect, prepare_store, tracking_uri
from pipeline.report.document import write_report, write_timings
from pipeline.report.rows import ArtifactRow
from targets.base import ValidationReport


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    config: RunConfig,
    out_dir: Path,
    timings: StepTimes | None = None,
    reports: dict[str, ValidationReport] | None = None,
) -> list[ArtifactRow]:
    """The report; ``reports``: the validate flow's, handed on (else read from the run folder)."""
    files = write_report(config, run_folder.RunFolder(out_dir), timings, reports)
    create_markdown_artifact(
        key=f"report-{run_folder.slug(config.name)}",
        markdown=files.ui_markdown,  # plots embedded: the UI cannot fetch files beside it
        description=f"onedge report of {config.name} ({out_dir})",
    )
    return files.rows


@task(name="attach-report", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def attach_report_task(outcome: RegistryOutcome | PerTargetOutcome, files: list[Path]) -> None:
    registered = (
        [t.registered for t in outcome.targets.values() if t.registered is not None]
        if isinstance(outcome, PerTargetOutcome)
        else [outcome]
    )
    for run_id, uri in dict.fromkeys((r.run_id, r.tracking_uri) for r in registered):
        attach_files(connect(uri), run_id, files)


class PipelineResult(StrictModel):
    out_dir: Path
    report_md: Path
    report_html: Path
    rows: list[ArtifactRow]
    registry: RegistryOutcome | PerTargetOutcome | None = None
    timings: StepTimes | None = None


@flow(name="edge-pipeline")
def edge_pipeline(
    config: ConfigArg, out_dir: Path | None = None, overrides: list[str] | None = None
) -> PipelineResult | State:
    """The whole chain on one config; ends with the report (also a Prefect artifact).

    When no artifact passed the gates of every required target, the report is written and the
    run registered, then the flow returns a Failed state with that message (an expected ending,
    not a crash: Prefect logs no traceback); the caller's ``edge_pipeline(...)`` raises
    :class:`NothingPassedError` holding the result. Every step is timed (``report.json`` and
    the report, :mod:`pipeline.durations`).
    """
    clock = Stopwatch()
    cfg, run = run_folder.open_run(config, out_dir, overrides)  # the one open of the chain
    check_run_data(cfg, run.root, Console())  # an image folder is checked before training
    opened = OpenedRun(config=cfg, root=run.root)
    reports = train_export_validate(opened, clock)
    outcome = None
    if cfg.registry.enabled:
        with clock.step("register"):
            outcome = promote_flow(opened)
    with clock.step("report"):
        # quote: Prefect would walk every report (latency samples included) for futures
        rows = report_task(cfg, run.root, clock.snapshot(), quote(reports))
    if outcome is not None:
        with clock.step("attach-report"):
            attach_report(cfg, run, outcome)
    timings = clock.snapshot()
    write_timings(run, timings)  # report.json gets the report's own time and the total too
    result = PipelineResult(
        out_dir=run.root,
        report_md=run.report_md,
        report_html=run.report_html,
        rows=rows,
        registry=outcome,
        timings=timings,
    )
    return run_ending(cfg, run, reports, result)


def train_export_validate(opened: OpenedRun, clock: Stopwatch) -> dict[str, ValidationReport]:
    """The first three flows, timed, each handed the opened run and what it needs of the one
    before; meanwhile a child process creates a new local MLflow store's tables on the core
    training leaves. Every target's report."""
    cfg, run = opened.config, run_folder.RunFolder(opened.root)
    store = prepare_store(tracking_uri(cfg, run)) if cfg.registry.enabled else None
    try:
        with clock.step("train"):
            trained = train_flow(opened)
        with clock.step("export"):
            export_flow(opened, trained=trained)
        with clock.step("validate"):
            reports = validate_flow(opened)
    finally:
        problem = store.wait() if store is not None else None
    if store is not None:
        clock.times.mlflow_background_s = store.seconds
    if problem:
        get_run_logger().warning(f"{problem}; registering creates it")
    return reports


def attach_report(
    cfg: RunConfig, run: run_folder.RunFolder, outcome: RegistryOutcome | PerTargetOutcome
) -> None:
    """The report's files added to the registered version's MLflow run (retried like it)."""
    r = cfg.registry
    attach_report_task.with_options(retries=r.retries, retry_delay_seconds=r.retry_delay_s)(
        outcome, [run.report_md, run.report_html]
    )


def run_ending(
    cfg: RunConfig,
    run: run_folder.RunFolder,
    reports: dict[str, ValidationReport],
    result: PipelineResult,
) -> PipelineResult | State:
    """``result``, or the Failed state saying why when nothing passed (per target: a target
    without a pick; else no artifact passed the gates of every required target)."""
    outcome = result.registry
    if isinstance(outcome, PerTargetOutcome):  # per target: every target needs a pick
        empty = [spec for spec, t in outcome.targets.items() if t.registered is None]
        if empty:
            return nothing_passed(
                f"no artifact fits the budget and gates of {', '.join(empty)}; "
                f"the report says why: {run.report_md}",
                result,
            )
        return result
    if not passed_everywhere(cfg, reports):  # the flow ends Failed, saying why
        required = ", ".join(cfg.validate.required_targets())
        kept = f"; version {outcome.version} registered without alias" if outcome else ""
        return nothing_passed(
            f"no artifact passed the gates of every required target ({required}){kept}; "
            f"the report says why: {run.report_md}",
            result,
        )
    return result


def nothing_passed(message: str, result: PipelineResult) -> State:
    """The Failed state a run ends in when nothing passed: its message says why, and the
    :class:`NothingPassedError` it holds (never raised in the flow) reaches the caller."""
    return Failed(message=message, data=NothingPassedError(message, result))


def passed_everywhere(cfg: RunConfig, reports: dict[str, ValidationReport]) -> list[str]:
    """The artifacts that passed the gates of every required target (``reports``: every
    target's)."""
    required = cfg.validate.required_targets()
    names = {r.artifact for report in reports.values() for r in report.results}
    passing = []
    for name in sorted(names):
        try:
            if gather_evidence(name, reports, required).passed:
                passing.append(name)
        except PipelineError:  # not measured on every target: not passed
            continue
    return passing
