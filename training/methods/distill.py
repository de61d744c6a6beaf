"""Teacher-based methods: Hinton KD, ensemble KD and self-distillation (docs/METHODS.md §6).

Each is a recipe of stages (:mod:`training.stages`): the teachers are earlier stages of the same
run or checkpoints the user named, and the last stage distils them into a single-branch student
with ``hinton_kd_loss`` on the average of the teachers' logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PositiveInt

from onedge.errors import ConfigError
from training.config import MethodConfig, ModelConfig, TeacherConfig, TrainingConfig
from training.errors import CheckpointError
from training.losses import hinton_kd_loss
from training.methods.base import METHODS, Method, register_method
from training.models.base import MultiBranchModel
from training.stage_spec import StageSpec
from training.teacher_outputs import mean_teacher_logits


class KdConfig(MethodConfig):
    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the distillation term")
    teacher: Path | TeacherConfig | None = Field(
        None,
        description="an onedge checkpoint, or a teacher to train first as stage 'teacher'",
    )


class EnsembleKdConfig(MethodConfig):
    name: Literal["ensemble-kd"] = "ensemble-kd"
    members: PositiveInt = Field(3, description="L: seed stages of the student's architecture")
    teachers: list[Path] = Field(
        default_factory=list, description="onedge checkpoints to average instead of training L"
    )
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    member_epochs: PositiveInt | None = Field(None, description="None: train.epochs")


class SelfDistillConfig(MethodConfig):
    name: Literal["self-distill"] = "self-distill"
    generations: PositiveInt = Field(
        1, description="born-again rounds after the first network (each a fresh network)"
    )
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)


def teacher_stage(
    config: TrainingConfig, name: str, teacher: TeacherConfig, seed: int
) -> StageSpec:
    """A stage that trains ``teacher`` on the run's data: nothing of the student is in its config."""
    if not METHODS.get(teacher.method.name).single_stage:
        raise ConfigError(
            f"a teacher stage trains a one-stage method, not {teacher.method.name!r}; "
            "train that teacher as its own run and give its checkpoint"
        )
    train = config.train.model_copy(update={"epochs": teacher.epochs or config.train.epochs})
    stage = TrainingConfig(
        name=name,
        seed=seed,
        data=config.data,
        model=teacher.model or config.model,
        method=teacher.method,
        train=train,
    )
    return StageSpec(name, stage)


class TeacherMethod(Method):
    """Base of the methods that learn from teachers: a single-branch student, teachers frozen."""

    single_stage = False
    cfg: KdConfig

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__(cfg)
        self.teachers: list[MultiBranchModel] = []

    @classmethod
    def build_network(cls, model: ModelConfig, **shape) -> MultiBranchModel:
        return super().build_network(model.model_copy(update={"branches": 1}), **shape)

    def prepare(self, device: torch.device, teachers: list, inputs: dict | None = None) -> None:
        if not teachers:
            raise CheckpointError(f"method {self.name!r} was given no teacher checkpoint")
        self.teachers = [t.model for t in teachers]

    def loss(self, outputs, inputs, targets, epoch):
        if not self.teachers:
            raise CheckpointError("the teachers were not loaded; call prepare() first")
        teacher_logits = mean_teacher_logits(self.teachers, inputs)
        if teacher_logits.shape[1] != outputs.branch_logits[0].shape[1]:
            raise ConfigError(
                f"the teachers predict {teacher_logits.shape[1]} classes, "
                f"the student {outputs.branch_logits[0].shape[1]}"
            )
        return hinton_kd_loss(
            outputs.branch_logits[0], teacher_logits, targets, self.cfg.temperature, self.cfg.alpha
        )


@register_method("kd")
class KdMethod(TeacherMethod):
    """Hinton KD: a single-branch student learns from a teacher (a checkpoint, or a first stage)."""

    config = KdConfig

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        teacher = config.method.teacher
        if teacher is None:
            raise ConfigError(
                "method 'kd' needs method.teacher=<checkpoint of a trained teacher> "
                "or a teacher to train first (method.teacher.model.name=resnet32)"
            )
        if isinstance(teacher, TeacherConfig):
            first = teacher_stage(config, "teacher", teacher, config.seed)
            return [first, StageSpec("student", config, teachers=("teacher",))]
        return [StageSpec("student", config, given_teachers=(teacher,))]


@register_method("ensemble-kd")
class EnsembleKdMethod(TeacherMethod):
    """Ensemble KD: L seed stages of the student's architecture, then KD of their average."""

    config = EnsembleKdConfig

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        m = config.method
        if m.teachers:
            return [StageSpec("student", config, given_teachers=tuple(m.teachers))]
        member = TeacherConfig(model=config.model, epochs=m.member_epochs)
        seeds = [
            teacher_stage(config, f"seed-{i}", member, config.seed + i)
            for i in range(1, m.members + 1)
        ]
        return [*seeds, StageSpec("student", config, teachers=tuple(s.name for s in seeds))]


@register_method("self-distill")
class SelfDistillMethod(TeacherMethod):
    """Born-again self-distillation: each generation a fresh network taught by the one before."""

    config = SelfDistillConfig

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        m = config.method
        first = TeacherConfig(model=config.model)
        specs = [teacher_stage(config, "gen-0", first, config.seed + 1)]
        for g in range(1, m.generations):
            kd = KdConfig(temperature=m.temperature, alpha=m.alpha)
            stage = specs[0].config.model_copy(
                update={"name": f"gen-{g}", "seed": config.seed + 1 + g, "method": kd}
            )
            specs.append(StageSpec(f"gen-{g}", stage, teachers=(specs[-1].name,)))
        specs.append(StageSpec(f"gen-{m.generations}", config, teachers=(specs[-1].name,)))
        return specs
