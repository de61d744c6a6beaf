"""Prefect flows: train -> export -> validate (fan-out over targets) -> promote, and the chain.

Every task is a thin call of a plain function (training, export, targets, pipeline.run_folder,
pipeline.model_registry.register, pipeline.report.document). Each flow takes the run config (a RunConfig, or the path of
a YAML file plus overrides, which is what a deployment passes) and the run folder; the stages
exchange files through that folder (see :mod:`pipeline.run_folder`), so each flow also runs alone.

Training and export keep their results in ``DIR/.cache`` as JSON records (:mod:`pipeline.cache`),
keyed by their inputs, onedge's version and the source of training/, export/ and targets/:
rerunning a run whose validation failed goes straight to validation. Only
transient faults (a board unreachable or timing out, the registry busy) are retried.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.states import Failed, State

from export.config import ExportConfig
from export.exporter import ExportResult, export_checkpoint
from onedge.files import sha256_file
from onedge.strict import StrictModel
from pipeline import cache, run_folder
from pipeline.config import RunConfig, ValidateConfig
from pipeline.durations import StageTimes, Stopwatch
from pipeline.errors import ModelRegistryUnavailableError, NothingPassedError, PipelineError
from pipeline.model_registry.approval import approval_flow, settle_approval
from pipeline.model_registry.promotion import gather_evidence
from pipeline.model_registry.register import RegistryOutcome, attach_files, register_run
from pipeline.model_registry.target_versions import (
    PerTargetOutcome,
    per_target_mode,
    register_per_target,
)
from pipeline.model_registry.tracking import connect, prepare_store, tracking_uri
from pipeline.report.document import ArtifactRow, artifact_rows, write_report, write_timings
from targets.base import ValidationReport
from targets.errors import TargetTimeoutError, TargetUnreachableError
from training.config import TrainingConfig
from training.stages import method_stages, run_stage, stage_dir, upstream_files
from training.trainer import TrainResult, summarise_run

LOCAL_BOARD = "local-cpu"
TRANSIENT = (TargetUnreachableError, TargetTimeoutError, ModelRegistryUnavailableError)
# ModelRegistryUnavailableError includes ChampionChangedError: a retry decides again
ConfigArg = RunConfig | Path
REGISTRY_WAIT_S = 600.0  # longest wait for another run's decide-and-move on the same model
R = TypeVar("R")


def transient_fault(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only faults that may pass (network, a busy store)."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


def ensure_board_limits(names: list[str]) -> None:
    """Create a one-slot concurrency limit (a board, a registered model) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # another run made it meanwhile
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )


@task(name="train-stage", cache_policy=NO_CACHE, persist_result=False)
def stage_task(config: TrainingConfig, stage: str, run_dir: Path, cache_dir: Path) -> TrainResult:
    """One stage of the method's recipe, unless ``cache_dir`` holds a record of it.

    The key is the stage's own config (a teacher stage's holds nothing of the student), the
    sha256 of the checkpoints it reads (teachers, the stage it starts from, other inputs), where
    it writes, and the code (:func:`pipeline.cache.cache_key`): a second run with another student
    setting finds the teacher's record and trains only the student.
    """
    specs = method_stages(config)
    index = [s.name for s in specs].index(stage)
    spec, final = specs[index], index == len(specs) - 1
    out_dir = stage_dir(run_dir, spec.name, final)
    upstream = {role: sha256_file(p) for role, p in upstream_files(spec, run_dir).items()}
    init = spec.config.model.init  # model.init: another file at the same path is another stage
    if init is not None and Path(init).is_file():
        upstream["model.init"] = sha256_file(Path(init))
    inputs = {
        "config": spec.config.model_dump(mode="json"),
        "run": spec.run,
        "upstream": upstream,
        "out": str(out_dir),
    }
    record = f"train-{spec.name}"
    key = cache.cache_key(record, inputs)
    hit = cache.load_result(cache_dir, record, key, TrainResult)
    if hit is not None:
        get_run_logger().info(
            f"reusing stage {spec.name} in {out_dir} (cache record in {cache_dir})"
        )
        return hit
    c = spec.config
    get_run_logger().info(
        f"stage {spec.name}: {c.model.name} x{c.model.branches} with {c.method.name} on "
        f"{c.data.name} for {c.train.epochs} epochs -> {out_dir}"
    )
    result = run_stage(spec, run_dir, final)
    m = result.metrics
    get_run_logger().info(
        f"stage {spec.name} trained: "
        + (f"{100 * m['deployed_top1']:.2f}% test top-1" if m.get("deployed_top1") else "done")
    )
    cache.store_result(cache_dir, record, key, result, TrainResult, [result.checkpoint])
    return result


@task(name="export", cache_policy=NO_CACHE, persist_result=False)
def export_task(
    checkpoint: Path, checkpoint_sha256: str, out_dir: Path, settings: ExportConfig, cache_dir: Path
) -> ExportResult:
    """``checkpoint_sha256`` is part of the cache key: a retrained checkpoint is exported again."""
    inputs = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "out": str(out_dir),
        "settings": settings.model_dump(mode="json"),
    }
    key = cache.cache_key("export", inputs)
    hit = cache.load_result(cache_dir, "export", key, ExportResult)
    if hit is not None:
        get_run_logger().info(f"reusing the export in {out_dir} (cache record in {cache_dir})")
        return hit
    result = export_checkpoint(checkpoint, out_dir, settings)
    get_run_logger().info(
        f"exported {len(result.artifacts)} artifacts ({', '.join(a.name for a in result.artifacts)})"
    )
    for failed in result.failed:  # that artifact's failure: the run goes on with the others
        get_run_logger().warning(f"{failed['name']} failed its export: {failed['reason']}")
    files = [result.export_json, result.eval_file]
    cache.store_result(cache_dir, "export", key, result, ExportResult, files)
    return result


@task(name="validate", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def validate_task(spec: str, out_dir: Path, cfg: ValidateConfig) -> ValidationReport:
    with concurrency(
        run_folder.board_limit_name(spec),
        occupy=1,
        timeout_seconds=cfg.board_timeout_s,
        strict=True,
    ):
        report = run_folder.validate_on_target(spec, run_folder.RunFolder(out_dir), cfg)
        from pipeline.int8_debug import repair_int8_below_gate  # INT8 below the agreement gate

        report = repair_int8_below_gate(spec, run_folder.RunFolder(out_dir), cfg, report)
    rows = artifact_rows({spec: report}, None)
    create_table_artifact(
        key=f"validation-{run_folder.slug(spec)}",
        table=[row.model_dump(exclude={"reasons", "speedup", "registered"}) for row in rows],
        description=f"Validation on {spec}: {'passed' if report.passed else 'failed'}",
    )
    failed = [r.artifact for r in report.results if r.verdict == "fail"]
    get_run_logger().info(
        f"{spec}: {len(report.results)} artifacts, "
        + (f"failed the gates: {', '.join(failed)}" if failed else "no gate failed")
    )
    return report


@task(name="torch-baseline", cache_policy=NO_CACHE)
def torch_baseline_task(out_dir: Path, cfg: ValidateConfig) -> run_folder.TorchBaseline:
    run = run_folder.RunFolder(out_dir)
    with concurrency(run_folder.board_limit_name(LOCAL_BOARD), occupy=1, strict=True):
        return run_folder.torch_baseline(run.export, run.checkpoint, cfg.settings, run.baseline)


@task(name="register", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def register_task(config: RunConfig, out_dir: Path) -> RegistryOutcome:

    limit = run_folder.registry_limit_name(config.model_name())
    ensure_board_limits([limit])

    def one_at_a_time(name: str) -> Any:  # across processes and machines sharing the server
        return concurrency(limit, occupy=1, timeout_seconds=REGISTRY_WAIT_S, strict=True)

    outcome = register_run(config, run_folder.RunFolder(out_dir), lock=one_at_a_time)
    get_run_logger().info(
        f"registered {outcome.artifact} as {outcome.model_name} version {outcome.version}: "
        + "; ".join(outcome.decision.reasons)
    )
    return outcome


@task(name="register-per-target", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def register_per_target_task(config: RunConfig, out_dir: Path) -> PerTargetOutcome:

    limit = run_folder.registry_limit_name(config.model_name())
    ensure_board_limits([limit])

    def one_at_a_time(name: str) -> Any:  # the same lock as register_task's
        return concurrency(limit, occupy=1, timeout_seconds=REGISTRY_WAIT_S, strict=True)

    outcome = register_per_target(config, run_folder.RunFolder(out_dir), lock=one_at_a_time)
    for spec, t in outcome.targets.items():
        got = t.registered
        get_run_logger().info(
            f"{spec}: "
            + (
                f"{got.artifact} as {outcome.model_name} version {got.version}: "
                + "; ".join(got.decision.reasons)
                if got
                else "no artifact fits its budget and gates"
            )
        )
    return outcome


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    config: RunConfig, out_dir: Path, timings: StageTimes | None = None
) -> list[ArtifactRow]:
    files = write_report(config, run_folder.RunFolder(out_dir), timings)
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


@flow(name="train")
def train_flow(
    config: ConfigArg, out_dir: Path | None = None, overrides: list[str] | None = None
) -> TrainResult:
    """Every stage of the method, each its own cached task; the student's metrics summarise them."""
    cfg, run = run_folder.open_run(config, out_dir, overrides)
    training = cfg.training_config()
    specs = method_stages(training)
    for spec in specs:
        named = stage_task.with_options(task_run_name=f"train-{spec.name}")
        result = named(training, spec.name, run.train, run.cache)
    result.metrics = summarise_run(specs, run.train, result.metrics)
    return result


@flow(name="export")
def export_flow(
    config: ConfigArg, out_dir: Path | None = None, overrides: list[str] | None = None
) -> ExportResult:
    cfg, run = run_folder.open_run(config, out_dir, overrides)
    checkpoint = run.checkpoint
    if not checkpoint.is_file():
        raise PipelineError(f"{checkpoint} does not exist: run the train stage first")
    return export_task(checkpoint, sha256_file(checkpoint), run.export, cfg.export, run.cache)


@flow(name="validate")
def validate_flow(
    config: ConfigArg, out_dir: Path | None = None, overrides: list[str] | None = None
) -> dict[str, ValidationReport]:
    """Every board at once; on one board, this run's measurements one after the other.

    A one-slot limit per board keeps two measurements off one board. This run's own tasks on
    one board (the PyTorch baseline and local-cpu, or two labels of one machine) are chained
    with ``wait_for`` instead of racing for the slot: the loser of a race polls at Prefect's
    Retry-After (the slot's average occupancy, seconds to tens of seconds), not when the slot
    frees. The limit still keeps other runs off the board.
    """
    cfg, run = run_folder.open_run(config, out_dir, overrides)
    v = cfg.validate
    ensure_board_limits([run_folder.board_limit_name(s) for s in {*v.targets, LOCAL_BOARD}])
    retrying = validate_task.with_options(retries=v.retries, retry_delay_seconds=v.retry_delay_s)
    last_on: dict[str, Any] = {}  # board limit -> this run's latest task measuring on it
    baseline = None
    if v.torch_baseline:
        baseline = last_on[run_folder.board_limit_name(LOCAL_BOARD)] = torch_baseline_task.submit(
            run.root, v
        )
    futures = {}
    for spec in v.targets:
        board = run_folder.board_limit_name(spec)
        before = [last_on[board]] if board in last_on else []
        futures[spec] = last_on[board] = retrying.submit(spec, run.root, v, wait_for=before)
    if baseline is not None:
        baseline.result()
    return {spec: future.result() for spec, future in futures.items()}


@flow(name="promote")
def promote_flow(
    config: ConfigArg, out_dir: Path | None = None, overrides: list[str] | None = None
) -> RegistryOutcome | PerTargetOutcome:
    """Register the run's artifact; with ``registry.approval: ask`` a new champion waits for a
    person (:mod:`pipeline.model_registry.approval`), and stays candidate if nobody approves in time. With
    ``registry.per_target`` (several targets), each target's pick under ``champion-<target>``."""
    from prefect.exceptions import FlowPauseTimeout

    cfg, run = run_folder.open_run(config, out_dir, overrides)
    r = cfg.registry
    if per_target_mode(cfg):
        return register_per_target_task.with_options(
            retries=r.retries, retry_delay_seconds=r.retry_delay_s
        )(cfg, run.root)
    outcome = register_task.with_options(retries=r.retries, retry_delay_seconds=r.retry_delay_s)(
        cfg, run.root
    )
    if not outcome.awaiting_approval:
        return outcome
    try:
        answer = approval_flow(outcome, r.approval_timeout_s)
    except FlowPauseTimeout:
        why = f"no approval within {r.approval_timeout_s} s: stays {r.candidate_alias}"
        get_run_logger().warning(f"version {outcome.version}: {why}")
        return settle_approval(outcome, False, why, r, run)
    verdict = "approved" if answer.approve else "not approved"
    why = f"{verdict} in the approval step" + (f": {answer.note}" if answer.note else "")
    get_run_logger().info(f"version {outcome.version}: {why}")
    return settle_approval(outcome, answer.approve, why, r, run)


class PipelineResult(StrictModel):
    out_dir: Path
    report_md: Path
    report_html: Path
    rows: list[ArtifactRow]
    registry: RegistryOutcome | PerTargetOutcome | None = None
    timings: StageTimes | None = None


@flow(name="edge-pipeline")
def edge_pipeline(
    config: ConfigArg, out_dir: Path | None = None, overrides: list[str] | None = None
) -> PipelineResult | State:
    """The whole chain on one config; ends with the report (also a Prefect artifact).

    When no artifact passed the gates of every required target, the report is written and the
    run registered, then the flow returns a Failed state with that message (an expected ending,
    not a crash: Prefect logs no traceback); the caller's ``edge_pipeline(...)`` raises
    :class:`NothingPassedError` holding the result. Every stage is timed (``report.json`` and
    the report, :mod:`pipeline.durations`).
    """
    from rich.console import Console

    from pipeline.data_check import check_run_data

    clock = Stopwatch()
    cfg, run = run_folder.open_run(config, out_dir, overrides)
    check_run_data(cfg, run.root, Console())  # an image folder is checked before training
    # a new local store's tables are created by a child process on the core training leaves
    store = prepare_store(tracking_uri(cfg, run)) if cfg.registry.enabled else None
    try:
        with clock.stage("train"):
            train_flow(cfg, run.root)
        with clock.stage("export"):
            export_flow(cfg, run.root)
        with clock.stage("validate"):
            validate_flow(cfg, run.root)
    finally:
        problem = store.wait() if store is not None else None
    if store is not None:
        clock.times.mlflow_background_s = store.seconds
    if problem:
        get_run_logger().warning(f"{problem}; registering creates it")
    outcome = None
    if cfg.registry.enabled:
        with clock.stage("register"):
            outcome = promote_flow(cfg, run.root)
    with clock.stage("report"):
        rows = report_task(cfg, run.root, clock.snapshot())
    if outcome is not None:
        r = cfg.registry
        with clock.stage("attach-report"):
            attach_report_task.with_options(retries=r.retries, retry_delay_seconds=r.retry_delay_s)(
                outcome, [run.report_md, run.report_html]
            )
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
    if isinstance(outcome, PerTargetOutcome):  # per target: every target needs a pick
        empty = [spec for spec, t in outcome.targets.items() if t.registered is None]
        if empty:
            return nothing_passed(
                f"no artifact fits the budget and gates of {', '.join(empty)}; "
                f"the report says why: {run.report_md}",
                result,
            )
        return result
    if not passed_everywhere(cfg, run):  # the flow ends Failed, saying why
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


def passed_everywhere(cfg: RunConfig, run: run_folder.RunFolder) -> list[str]:
    """The artifacts that passed the gates of every required target."""

    reports = run_folder.load_reports(run, cfg.validate)
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
