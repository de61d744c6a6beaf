"""The train flow: every stage of the method's recipe, each its own cached task."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onedge.files import sha256_file
from pipeline import cache
from pipeline.config import ConfigArg
from pipeline.flows.handoff import OpenedRun, take_run
from training.config import TrainingConfig
from training.stages import method_stages, run_stage, stage_dir, upstream_files
from training.trainer import TrainResult, summarise_run


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


@flow(name="train")
def train_flow(
    config: ConfigArg | OpenedRun, out_dir: Path | None = None, overrides: list[str] | None = None
) -> TrainResult:
    """Every stage of the method, each its own cached task; the student's metrics summarise them.

    ``config`` may be the chain's :class:`~pipeline.flows.handoff.OpenedRun` (no second open).
    """
    cfg, run = take_run(config, out_dir, overrides)
    training = cfg.training_config()
    specs = method_stages(training)
    for spec in specs:
        named = stage_task.with_options(task_run_name=f"train-{spec.name}")
        result = named(training, spec.name, run.train, run.cache)
    result.metrics = summarise_run(specs, run.train, result.metrics)
    return result
