"""Multi-stage training: a method is a recipe of stages, checked and run here.

``Method.stages(config)`` returns a list of :class:`~training.stage_spec.StageSpec`: what each
stage trains (its own complete :class:`TrainingConfig`), which earlier stages or given
checkpoints teach it. The last stage is the run's student and writes into the run folder itself
(``checkpoint.pt``, ``metrics.json``, ... as a one-stage run always did); every earlier stage
writes into ``stages/<name>/`` with its own checkpoint, so a run resumes at the stage and the
epoch where it stopped. :func:`training.trainer.train` walks the list; nothing here imports Prefect or the
trainer: the flow walks the same list, one cached task per stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onedge.errors import ConfigError
from training.checkpoint_file import read_checkpoint
from training.config import TrainingConfig
from training.methods import METHODS
from training.stage_spec import CHECKPOINT, METRICS, STAGE_RUNS, StageSpec, stage_dir


def method_stages(config: TrainingConfig) -> list[StageSpec]:
    """The checked recipe of ``config``'s method: unique names, teachers from earlier stages."""
    specs = METHODS.get(config.method.name).stages(config)
    if not specs:
        raise ConfigError(f"method {config.method.name!r} declares no stages")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen or not spec.name or "/" in spec.name or spec.name.startswith("."):
            raise ConfigError(f"method {config.method.name!r}: bad or repeated stage {spec.name!r}")
        missing = [t for t in spec.upstream_stages() if t not in seen]
        if missing:
            raise ConfigError(f"stage {spec.name!r} reads {missing}, which are not earlier stages")
        seen.add(spec.name)
    return specs


def stage_done(out: Path, config: TrainingConfig) -> bool:
    """A stage is done when its checkpoint holds all its epochs and its metrics are written."""
    if not (out / METRICS).is_file() or not (out / CHECKPOINT).is_file():
        return False
    return int(read_checkpoint(out / CHECKPOINT).get("epoch", 0)) >= config.train.epochs


def upstream_files(spec: StageSpec, run_dir: Path) -> dict[str, Path]:
    """Every file of an earlier stage (or given) that ``spec`` reads, by role: a cache key part."""
    files = {f"teacher:{i}": p for i, p in enumerate(spec.upstream(run_dir))}
    if spec.init_from:
        files["init"] = stage_dir(run_dir, spec.init_from, False) / CHECKPOINT
    files.update({f"input:{n}": stage_dir(run_dir, n, False) / CHECKPOINT for n in spec.inputs})
    return files


def run_stage(spec: StageSpec, run_dir: Path, final: bool, resume: bool = False) -> Any:
    """Train one stage of a run in its folder (the run folder itself for the last one)."""
    where = stage_dir(run_dir, spec.name, final)
    return STAGE_RUNS.get(spec.run)(
        spec.config,
        where,
        resume=resume and (where / CHECKPOINT).is_file(),
        teachers=spec.upstream(run_dir),
        init=stage_dir(run_dir, spec.init_from, False) / CHECKPOINT if spec.init_from else None,
        inputs={n: stage_dir(run_dir, n, False) / CHECKPOINT for n in spec.inputs},
    )
