"""One stage of a method's recipe: what it trains, what it reads, where it writes.

:class:`StageSpec` is what ``Method.stages(config)`` returns (:mod:`training.stages` checks and
runs the list); :data:`STAGE_RUNS` names the stage functions (the trainer's ``train``, SRM's
``srm-dictionary``), each returning a :class:`TrainResult`. The last stage writes into the run
folder itself, every earlier one into ``stages/<name>/``. Nothing here imports the methods.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onedge.files import atomic_write
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


# name -> stage function(config, out_dir, *, resume, teachers, init, inputs) -> TrainResult;
# the trainer registers "train" (training.trainer.train_stage), a method may add its own
STAGE_RUNS: Registry[Callable[..., Any]] = Registry("stage function")


def stage_dir(run_dir: Path, name: str, final: bool) -> Path:
    """Where a stage writes: the run folder for the last stage, ``stages/<name>`` before it."""
    return Path(run_dir) if final else Path(run_dir) / STAGES_DIR / name


@dataclass
class TrainResult:
    """What a stage function returns: its folder, its checkpoint and its metrics (rank 0 only)."""

    out_dir: Path
    checkpoint: Path
    metrics: dict[str, Any]


def atomic_write_json(path: Path, data: Any) -> None:
    """A stage's JSON file (metrics, history, predictions), written atomically."""
    atomic_write(path, json.dumps(data, indent=2))
