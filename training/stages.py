"""Multi-stage training: a method is a recipe of stages.

``Method.stages(config)`` returns a list of :class:`StageSpec`: what each stage trains (its own
complete :class:`TrainingConfig`), which earlier stages or given checkpoints teach it. The last
stage is the run's student and writes into the run folder itself (``checkpoint.pt``,
``metrics.json``, ... as a one-stage run always did); every earlier stage writes into
``stages/<name>/`` with its own checkpoint, so a run resumes at the stage and the epoch where it
stopped. Nothing here imports Prefect: the flow walks the same list, one cached task per stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onedge.errors import ConfigError
from onedge.registry import Registry
from training.config import TrainingConfig

STAGES_DIR = "stages"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class StageSpec:
    """One stage of a method's recipe.

    ``config`` is everything the stage trains (its method, model, seed and schedule), and nothing
    of the stages after it, so a teacher stage's config does not change with the student's
    settings. ``teachers`` names earlier stages whose final checkpoints teach this one;
    ``given_teachers`` are onedge checkpoints the user named (``method.teacher``).
    """

    name: str
    config: TrainingConfig
    teachers: tuple[str, ...] = ()
    given_teachers: tuple[Path, ...] = field(default_factory=tuple)
    init_from: str | None = None  # an earlier stage whose network weights start this one
    inputs: tuple[str, ...] = ()  # earlier stages whose checkpoints the method reads otherwise
    run: str = "train"  # the stage function in STAGE_RUNS: the trainer unless a method adds one

    def upstream_stages(self) -> list[str]:
        """Every earlier stage this one reads: teachers, the initialising one, other inputs."""
        names = [*self.teachers, *([self.init_from] if self.init_from else []), *self.inputs]
        return list(dict.fromkeys(names))

    def upstream(self, run_dir: Path) -> list[Path]:
        """The teacher checkpoints of this stage, in the order the method receives them."""
        return [stage_dir(run_dir, name, False) / CHECKPOINT for name in self.teachers] + [
            Path(p) for p in self.given_teachers
        ]


def _train_stage(config: TrainingConfig, out_dir: Path, **kwargs: Any) -> Any:
    from training.trainer import train_stage

    return train_stage(config, out_dir, **kwargs)


# name -> stage function(config, out_dir, *, resume, teachers, init, inputs) -> TrainResult
STAGE_RUNS: Registry[Callable[..., Any]] = Registry("stage function")
STAGE_RUNS.add("train", _train_stage)


def stage_dir(run_dir: Path, name: str, final: bool) -> Path:
    """Where a stage writes: the run folder for the last stage, ``stages/<name>`` before it."""
    return Path(run_dir) if final else Path(run_dir) / STAGES_DIR / name


def method_stages(config: TrainingConfig) -> list[StageSpec]:
    """The checked recipe of ``config``'s method: unique names, teachers from earlier stages."""
    from training.methods import METHODS

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
    from training.checkpoint import read_checkpoint

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


def summarise_run(specs: list[StageSpec], run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The last stage's ``metrics`` plus ``seconds_total``, ``cpu_seconds_total`` (every stage,
    teachers included) and ``stages`` (each stage's top-1, seed, times, sha256), written back to
    the run folder's metrics.json."""
    from training.trainer import atomic_write_json

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


def run_stages(config: TrainingConfig, out_dir: Path, resume: bool = False) -> Any:
    """Train every stage of ``config``'s method in order; with ``resume`` continue where it stopped.

    A finished earlier stage is kept (its checkpoint teaches the later ones), a stopped one goes
    on from its last epoch. The returned result is the last stage's, its metrics summarised by
    :func:`summarise_run`.
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


def stage_summary(spec: StageSpec, where: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    from onedge.files import sha256_file

    return {
        "name": spec.name,
        "method": spec.config.method.name,
        "seed": spec.config.seed,
        "deployed_top1": metrics.get("deployed_top1"),
        "seconds": float(metrics.get("seconds_stage", 0.0)),
        "cpu_seconds": float(metrics.get("cpu_seconds_stage", 0.0)),
        "sha256": sha256_file(where / CHECKPOINT) if (where / CHECKPOINT).is_file() else None,
    }
