"""The validate flow: every target at once, each board one measurement at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from pipeline import run_folder
from pipeline.config import ConfigArg, ValidateConfig
from pipeline.flows.handoff import OpenedRun, take_run
from pipeline.flows.limits import LOCAL_BOARD, ensure_board_limits, transient_fault
from pipeline.int8_debug import repair_int8_below_gate
from pipeline.report.rows import artifact_rows
from targets.base import ValidationReport


@task(name="validate", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def validate_task(spec: str, out_dir: Path, cfg: ValidateConfig) -> ValidationReport:
    with concurrency(
        run_folder.board_limit_name(spec),
        occupy=1,
        timeout_seconds=cfg.board_timeout_s,
        strict=True,
    ):
        report = run_folder.validate_on_target(spec, run_folder.RunFolder(out_dir), cfg)
        # an ONNX INT8 artifact below the agreement gate is repaired from this measurement
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


@flow(name="validate")
def validate_flow(
    config: ConfigArg | OpenedRun, out_dir: Path | None = None, overrides: list[str] | None = None
) -> dict[str, ValidationReport]:
    """Every board at once; on one board, this run's measurements one after the other.

    A one-slot limit per board keeps two measurements off one board. This run's own tasks on
    one board (the PyTorch baseline and local-cpu, or two labels of one machine) are chained
    with ``wait_for`` instead of racing for the slot: the loser of a race polls at Prefect's
    Retry-After (the slot's average occupancy, seconds to tens of seconds), not when the slot
    frees. The limit still keeps other runs off the board.
    """
    cfg, run = take_run(config, out_dir, overrides)
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
