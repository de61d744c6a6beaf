"""The promote flow: register the run's pick (or each target's), with the approval step."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout

from pipeline import run_folder
from pipeline.config import ConfigArg, RunConfig
from pipeline.flows.handoff import OpenedRun, take_run
from pipeline.flows.limits import registry_lock, transient_fault
from pipeline.model_registry.approval import approval_flow, settle_approval
from pipeline.model_registry.register import RegistryOutcome, register_run
from pipeline.model_registry.target_versions import (
    PerTargetOutcome,
    per_target_mode,
    register_per_target,
)


@task(name="register", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def register_task(config: RunConfig, out_dir: Path) -> RegistryOutcome:
    lock = registry_lock(config.model_name())
    outcome = register_run(config, run_folder.RunFolder(out_dir), lock=lock)
    get_run_logger().info(
        f"registered {outcome.artifact} as {outcome.model_name} version {outcome.version}: "
        + "; ".join(outcome.decision.reasons)
    )
    return outcome


@task(name="register-per-target", cache_policy=NO_CACHE, retry_condition_fn=transient_fault)
def register_per_target_task(config: RunConfig, out_dir: Path) -> PerTargetOutcome:
    lock = registry_lock(config.model_name())  # the same lock as register_task's
    outcome = register_per_target(config, run_folder.RunFolder(out_dir), lock=lock)
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


@flow(name="promote")
def promote_flow(
    config: ConfigArg | OpenedRun, out_dir: Path | None = None, overrides: list[str] | None = None
) -> RegistryOutcome | PerTargetOutcome:
    """Register the run's artifact; with ``registry.approval: ask`` a new champion waits for a
    person (:mod:`pipeline.model_registry.approval`), and stays candidate if nobody approves in time. With
    ``registry.per_target`` (several targets), each target's pick under ``champion-<target>``.

    It reads the reports from the run folder, once, also in the chain: handed on, they would be
    this subflow's parameters, which Prefect keeps on its server with every run (latency samples
    included, about 90 KB a target)."""
    cfg, run = take_run(config, out_dir, overrides)
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
