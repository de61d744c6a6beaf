"""Typed configuration of the training half (pydantic, ``extra="forbid"``).

The pipeline's ``RunConfig`` composes these sections with the export, validation and registry
sections; training code only ever sees :class:`TrainingConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataConfig(Section):
    name: str = "digits"
    split_seed: int = Field(
        0, description="seeds the test/val/calibration split alone; `seed` never moves it"
    )
    root: Path | None = None
    download: bool = False
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 256
    num_workers: int = Field(0, ge=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    calibration_size: int = Field(512, ge=0)
    augment: bool = True
    limit_train: int | None = Field(None, gt=0)


class ModelConfig(Section):
    name: str = "resnet20"
    branches: PositiveInt = 3
    width: float = Field(1.0, gt=0.0)
    branch_point: int = Field(
        3, ge=1, description="ImageNet-style families: first per-branch stage"
    )


class MethodConfig(Section):
    name: str = "one"
    temperature: float | None = Field(None, gt=0.0, description="None: the method's default")
    rampup: bool = True
    rampup_epochs: PositiveInt = 80
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="KD: weight of the distillation term")
    teacher: Path | None = Field(None, description="KD: checkpoint of a trained teacher")
    widths: list[float] | None = Field(
        None,
        min_length=2,
        description="student-ensemble: one width per student, the first 1.0; "
        "None: (N-j)/N for N = model.branches",
    )
    a: float = Field(0.7, ge=0.0, description="student-ensemble: weight of CE(teacher, y)")
    b: float = Field(0.15, ge=0.0, description="student-ensemble: weight of the adapted MSE")
    c: float = Field(0.15, ge=0.0, description="student-ensemble: weight of the KL terms")
    student_ce: bool = Field(False, description="student-ensemble: add every student's own CE")


class TrainConfig(Section):
    epochs: PositiveInt = 30
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0.0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=lambda: [150, 225])
    gamma: float = Field(0.1, gt=0.0)
    warmup_epochs: int = Field(0, ge=0)
    device: str = "auto"
    amp: bool = True
    channels_last: bool = False
    deterministic: bool = True
    threads: int | None = Field(None, gt=0)
    progress: bool = True


class TrainingConfig(Section):
    """Everything one training run needs."""

    name: str = "onedge"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
