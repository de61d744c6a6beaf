"""The trainer: one loop for every method, single process or DDP under ``torchrun``.

:func:`train` walks a method's stages (:mod:`training.stages`); :func:`train_stage` trains one:
built once (:func:`training.stage_build.build_stage`), resumed from its checkpoint if asked
(:func:`resume_stage`), then per epoch :func:`training.epoch.train_one_epoch`, validation of
every branch and the ensemble, and an atomic checkpoint that ``resume`` continues from exactly.
At the end (:func:`finish_stage`) it picks the deployed branch by validation top-1, measures the
test split and writes ``history.json``, ``curves.png`` and, once, ``metrics.json``. The stage
functions (:data:`training.stage_spec.STAGE_RUNS`) are registered here: ``train`` and, from
:mod:`training.srm_dictionary`, SRM's ``srm-dictionary``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onedge.errors import ConfigError
from onedge.files import sha256_file
from training import srm_dictionary as _srm_dictionary  # noqa: F401  (registers its stage run)
from training.checkpoint_file import load_state, read_checkpoint, save_checkpoint
from training.config import TrainingConfig
from training.data import make_loader
from training.epoch import StageRun, format_epoch, train_one_epoch
from training.errors import CheckpointError
from training.evaluate import evaluate
from training.models import count_parameters
from training.plots import plot_curves
from training.runtime import peak_memory_mb, rng_state, set_rng_state
from training.stage_build import build_stage
from training.stage_spec import (
    CHECKPOINT,
    METRICS,
    STAGE_RUNS,
    StageSpec,
    TrainResult,
    atomic_write_json,
    stage_dir,
)
from training.stages import method_stages, run_stage, stage_done

PREDICTIONS = "test_predictions.json"  # per-image test labels and predictions, for paired tests


def compatible_for_resume(
    saved: dict[str, Any], config: TrainingConfig, path: Path, teachers: list[str] | None = None
) -> None:
    """Everything but the epoch count (and progress display) must match to resume exactly.

    ``teachers`` (sha256 of each teacher checkpoint) must match too: a stage taught by another
    teacher than the one it started with is another training run.
    """
    if teachers is not None and list(saved.get("teachers", [])) != teachers:
        raise CheckpointError(
            f"cannot resume from {path}: it was taught by other teacher checkpoints "
            "(their sha256 differ); train it again without --resume"
        )
    old = TrainingConfig.model_validate(saved)
    strip = {"train": {"epochs", "progress"}}
    a = old.model_dump(mode="json", exclude=strip)
    b = config.model_dump(mode="json", exclude=strip)
    if a != b:
        diff = [k for k in b if a.get(k) != b.get(k)]
        raise CheckpointError(
            f"cannot resume from {path}: its config differs in {', '.join(diff)}; "
            "resume with the same config (only train.epochs may change)"
        )


def train(config: TrainingConfig, out_dir: Path, resume: bool = False) -> TrainResult:
    """Train every stage of ``config``'s method in order into ``out_dir`` (the recipe is
    :func:`training.stages.method_stages`); with ``resume`` go on where it stopped.

    A finished earlier stage is kept (its checkpoint teaches the later ones), a stopped one goes
    on from its last epoch. The result is the last stage's (the student in
    ``out_dir/checkpoint.pt``), its metrics summarised by :func:`summarise_run`.
    """
    out_dir = Path(out_dir)
    specs = method_stages(config)
    for spec in specs[:-1]:
        if resume and stage_done(stage_dir(out_dir, spec.name, False), spec.config):
            continue
        run_stage(spec, out_dir, final=False, resume=resume)
    result = run_stage(specs[-1], out_dir, final=True, resume=resume)
    if result.metrics:  # rank 0 (under DDP the others have none)
        result.metrics = summarise_run(specs, out_dir, result.metrics)
    return result


def summarise_run(specs: list[StageSpec], run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The last stage's ``metrics`` plus ``seconds_total``, ``cpu_seconds_total`` (every stage,
    teachers included) and ``stages`` (each stage's top-1, seed, times, sha256), written back to
    the run folder's metrics.json."""
    summaries = []
    for i, spec in enumerate(specs):
        where = stage_dir(run_dir, spec.name, i == len(specs) - 1)
        own = metrics if i == len(specs) - 1 else json.loads((where / METRICS).read_text())
        summaries.append(stage_summary(spec, where, own))
    metrics = {
        **metrics,
        "seconds_total": sum(s["seconds"] for s in summaries),
        "cpu_seconds_total": sum(s["cpu_seconds"] for s in summaries),
        "stages": summaries,
    }
    atomic_write_json(Path(run_dir) / METRICS, metrics)
    return metrics


def stage_summary(spec: StageSpec, where: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "method": spec.config.method.name,
        "seed": spec.config.seed,
        "deployed_top1": metrics.get("deployed_top1"),
        "seconds": float(metrics.get("seconds_stage", 0.0)),
        "cpu_seconds": float(metrics.get("cpu_seconds_stage", 0.0)),
        "sha256": sha256_file(where / CHECKPOINT) if (where / CHECKPOINT).is_file() else None,
    }


def train_stage(
    config: TrainingConfig,
    out_dir: Path,
    resume: bool = False,
    teachers: list[Path] | None = None,
    init: Path | None = None,
    inputs: dict[str, Path] | None = None,
) -> TrainResult:
    """Train one stage into ``out_dir``; with ``resume`` continue from its checkpoint.

    ``teachers`` are onedge checkpoints (loaded with ``weights_only=True``, their data shape
    checked) handed to the method's ``prepare``; their sha256 go into the checkpoint. ``init`` is
    a checkpoint whose network weights start this stage; ``inputs`` are other files of earlier
    stages the method reads (SRM's dictionary). Build, resume, one epoch at a time (train, then
    validate and save), finish.
    """
    out_dir = Path(out_dir)
    run = build_stage(config, out_dir, resume, teachers or [], init, dict(inputs or {}))
    ckpt_path = out_dir / CHECKPOINT
    start_epoch, history = resume_stage(run, ckpt_path) if resume else (0, [])
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    for epoch in range(start_epoch, run.config.train.epochs):
        started, cpu_started = time.perf_counter(), time.process_time()
        record = train_one_epoch(run, epoch)
        if run.ddp.main:
            record.update({f"val_{k}": v for k, v in validate(run).items()})
            record["seconds_wall"] = time.perf_counter() - started  # training and validation
            record["cpu_seconds"] = time.process_time() - cpu_started  # this process's CPU time
            history.append(record)
            save_checkpoint(ckpt_path, checkpoint_state(run, epoch + 1, history))
            if run.config.train.progress:
                print(format_epoch(record), flush=True)
        run.ddp.barrier()
    metrics = finish_stage(run, history, out_dir) if run.ddp.main else {}
    run.ddp.barrier()
    run.ddp.close()
    return TrainResult(out_dir=out_dir, checkpoint=ckpt_path, metrics=metrics)


def resume_stage(run: StageRun, ckpt_path: Path) -> tuple[int, list[dict[str, Any]]]:
    """Load the stopped stage's checkpoint into ``run``; the epochs done and their history."""
    saved = read_checkpoint(ckpt_path, map_location=run.device)
    compatible_for_resume(saved["config"], run.config, ckpt_path, run.teacher_sha)
    load_state(run.model, saved["model"], ckpt_path)
    load_state(run.auxiliaries, saved.get("auxiliaries", {}), ckpt_path)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    start_epoch, history = int(saved["epoch"]), list(saved["history"])
    if start_epoch >= run.config.train.epochs and (ckpt_path.parent / METRICS).is_file():
        raise ConfigError(
            f"{ckpt_path} already holds {start_epoch} epochs; raise train.epochs to go on"
        )
    return start_epoch, history


def validate(run: StageRun) -> dict[str, Any]:
    """Every branch's and the ensemble's top-1 on the validation split."""
    return evaluate(run.model, run.val_loader, run.device, run.memory_format)


def checkpoint_state(run: StageRun, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    """What the checkpoint after ``epoch`` holds: enough to resume exactly, and the metrics."""
    return {
        "config": run.config.model_dump(mode="json"),
        "spec": run.splits.spec.to_dict(),
        "model": run.model.state_dict(),
        "auxiliaries": run.auxiliaries.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng_state(),
        "epoch": epoch,
        "history": history,
        "teachers": run.teacher_sha,
        "deployed_branch": pick_branch(history),
        "metrics": history[-1] if history else {},
    }


def pick_branch(history: list[dict[str, Any]]) -> int:
    """The deployed branch: highest validation top-1 at the last epoch (lowest index on ties)."""
    if not history:
        return 0
    accs = history[-1]["val_branch_top1"]
    return int(max(range(len(accs)), key=lambda i: (accs[i], -i)))


def finish_stage(run: StageRun, history: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """Test the deployed branch and the ensemble; write the predictions, history.json,
    curves.png and, once, metrics.json (with this stage's wall and CPU time)."""
    finishing, cpu_finishing = time.perf_counter(), time.process_time()
    config, model, device = run.config, run.model, run.device
    test_loader = make_loader(run.splits.test, config.data.eval_batch_size, shuffle=False, seed=0)
    test = evaluate(model, test_loader, device, run.memory_format, predictions=True)
    branch = pick_branch(history)
    metrics = {
        "deployed_branch": branch,
        "deployed_top1": test["branch_top1"][branch],
        "ensemble_top1": test["ensemble_top1"],
        "branch_top1": test["branch_top1"],
        "branch_widths": list(model.widths),
        "val_branch_top1": history[-1]["val_branch_top1"] if history else [],
        "val_ensemble_top1": history[-1]["val_ensemble_top1"] if history else None,
        "test_images": test["images"],
        "epochs": len(history),
        "method": config.method.name,
        "model": config.model.name,
        "dataset": config.data.name,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "images_per_second": float(np.mean([h["images_per_second"] for h in history])),
        "parameters_total": count_parameters(model),
        "parameters_student": count_parameters(model.extract(branch)),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "teachers": run.teacher_sha,
    }
    atomic_write_json(
        out_dir / PREDICTIONS,
        {
            "split_seed": config.data.split_seed,
            "labels": test["labels"],
            "deployed": test["branch_predictions"][branch],
            "ensemble": test["ensemble_predictions"],
            "branches": test["branch_predictions"],
        },
    )
    atomic_write_json(out_dir / "history.json", history)
    plot_curves(history, out_dir / "curves.png", title=f"{config.name}: {config.method.name}")
    # this stage's wall and CPU time: every epoch (a resumed run's earlier ones too), the test
    metrics["seconds_stage"] = sum(h.get("seconds_wall", h["seconds"]) for h in history) + (
        time.perf_counter() - finishing
    )
    metrics["cpu_seconds_stage"] = sum(h.get("cpu_seconds", 0.0) for h in history) + (
        time.process_time() - cpu_finishing
    )
    metrics["seconds_total"] = metrics["seconds_stage"]
    metrics["cpu_seconds_total"] = metrics["cpu_seconds_stage"]
    atomic_write_json(out_dir / METRICS, metrics)
    return metrics


STAGE_RUNS.add("train", train_stage)
