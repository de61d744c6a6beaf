"""The export flow: the trained checkpoint to its artifact folders, cached on its inputs."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from export.config import ExportConfig
from export.exporter import ExportResult, export_checkpoint
from pipeline import cache
from pipeline.config import ConfigArg
from pipeline.errors import PipelineError
from pipeline.flows.handoff import OpenedRun, checkpoint_sha256, take_run
from training.trainer import TrainResult


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


@flow(name="export")
def export_flow(
    config: ConfigArg | OpenedRun,
    out_dir: Path | None = None,
    overrides: list[str] | None = None,
    trained: TrainResult | None = None,
) -> ExportResult:
    """The run's checkpoint exported (or its cache record). ``trained``: the train flow's result,
    handed on by the chain, whose recorded sha256 of the checkpoint spares hashing it again."""
    cfg, run = take_run(config, out_dir, overrides)
    checkpoint = run.checkpoint
    if not checkpoint.is_file():
        raise PipelineError(f"{checkpoint} does not exist: run the train stage first")
    sha256 = checkpoint_sha256(checkpoint, trained)
    return export_task(checkpoint, sha256, run.export, cfg.export, run.cache)
