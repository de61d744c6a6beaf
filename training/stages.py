"""Multi-stage training: a method is a recipe of stages.

``Method.stages(config)`` returns a list of :class:`StageSpec`: what each stage trains (its own
complete :class:`TrainingConfig`), which earlier stages or given checkpoints teach it. The last
stage is the run's student and writes into the run folder itself (``checkpoint.pt``,
``metrics.json``, ... as a one-stage run always did); every earlier stage writes into
``stages/<name>/`` with its own checkpoint, so a run resumes at the stage and the epoch where it
stopped. :func:`training.trainer.train` walks the list; nothing here imports Prefect or the
trainer: the flow walks the same list, one cached task per stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onedge.errors import ConfigError
from onedge.registry import Registry
from training.checkpoint_file import read_checkpoint
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


# name -> stage function(config, out_dir, *, resume, teachers, init, inputs) -> TrainResult;
# the trainer registers "train" (training.trainer.train_stage), a method may add its own
STAGE_RUNS: Registry[Callable[..., Any]] = Registry("stage function")


def stage_dir(run_dir: Path, name: str, final: bool) -> Path:
    """Where a stage writes: the run folder for the last stage, ``stages/<name>`` before it."""
    return Path(run_dir) if final else Path(run_dir) / STAGES_DIR / name


def method_stages(config: TrainingConfig) -> list[StageSpec]:
    """The checked recipe of ``config``'s method: unique names, teachers from earlier stages."""
    from training.methods import METHODS  # the methods build StageSpec from here: a real circle

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
