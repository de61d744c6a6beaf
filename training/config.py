"""Typed configuration of the training half (pydantic, ``extra="forbid"``).

The pipeline's ``RunConfig`` composes these sections with the export, validation and registry
sections; training code only ever sees :class:`TrainingConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from onedge.errors import RegistryError
from onedge.strict import StrictModel
from training.method_configs import method_config


class DataConfig(StrictModel):
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
    # image folders (data.name: imagefolder); the built-in data sets ignore these
    image_size: int | tuple[int, int] | None = Field(
        None, description="the model's input: a side in pixels, or [height, width]"
    )
    crop_pct: float = Field(
        0.875,
        gt=0.0,
        le=1.0,
        description="eval: shorter side to image_size / crop_pct, centre crop",
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    antialias: bool = True
    channels: Literal[1, 3] = Field(3, description="3: RGB; 1: grey (luma)")
    scale: tuple[float, float] = Field(
        (0.08, 1.0), description="training: area range of the random resized crop"
    )
    ratio: tuple[float, float] = Field(
        (3 / 4, 4 / 3), description="training: aspect-ratio range of the random resized crop"
    )
    on_bad_image: Literal["stop", "skip"] = Field(
        "stop", description="stop: a bad image file ends the run; skip: left out and listed"
    )
    allow_duplicates: bool = Field(
        False, description="let byte-identical images sit in two splits (inflates accuracy)"
    )
    cache_dir: Path | None = Field(
        None, description="decoded-image cache; None: <run folder>/data-cache"
    )
    decode_workers: int | None = Field(
        None, ge=1, description="processes decoding images into the cache; None: one per core, <= 4"
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sides = (value,) if isinstance(value, int) else (value or ())
        if any(side <= 0 for side in sides):
            raise ValueError(f"image_size must be positive, got {value}")
        return value

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float], info: Any) -> tuple[float, float]:
        low, high = value
        top = 1.0 if info.field_name == "scale" else float("inf")
        if not 0.0 < low <= high <= top:
            raise ValueError(f"{info.field_name} needs 0 < low <= high <= {top}, got {value}")
        return value


class ModelConfig(StrictModel):
    name: str = Field("resnet20", description="a registered model, or timm/<architecture>")
    branches: PositiveInt = 3
    width: float = Field(1.0, gt=0.0)
    branch_point: int = Field(
        3, ge=1, description="ImageNet-style families: first per-branch stage"
    )
    init: Path | None = Field(
        None, description="a state dict (.pth/.pt/.bin/.safetensors) the network starts from"
    )
    init_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of model.init: recorded by training; when given, the file must match",
    )
    freeze: Literal["stem"] | NonNegativeInt | None = Field(
        None, description="fine-tuning: freeze the stem, or the stem and stages 1..k"
    )

    @model_validator(mode="after")
    def _freeze_needs_init(self) -> ModelConfig:
        if self.freeze is not None and self.init is None:
            raise ValueError("model.freeze needs model.init: frozen fresh weights learn nothing")
        if self.init_sha256 is not None and self.init is None:
            raise ValueError("model.init_sha256 names the hash of model.init, which is not set")
        return self


class MethodConfig(StrictModel):
    """Base of every method's own config: a tagged union on ``name``.

    Each method declares its settings in a subclass (``name: Literal["kd"] = "kd"`` plus its own
    fields) and names it as ``config`` on its registered :class:`training.methods.Method` class.
    A ``method`` section is validated as the subclass its ``name`` selects (looked up in
    :data:`training.method_configs.METHOD_CONFIGS`, filled when ``training.methods`` is
    imported), so a key that belongs to another method is refused.
    """

    name: str = "one"

    @classmethod
    def variant(cls, data: dict[str, Any]) -> type[MethodConfig]:
        """The config class for the method ``data`` names (``one`` when it names none)."""
        return method_config(str(data.get("name", DEFAULT_METHOD)))

    @classmethod
    def switch(cls, data: dict[str, Any], name: str) -> None:
        """Set ``data['name'] = name``; another method starts from its own defaults.

        The settings in ``data`` were written for the previous method (a temperature tuned for
        ONE is not one for KD), so switching clears them; keys set after the switch apply.
        """
        method_config(name)  # an unknown name fails here, with the known ones listed
        if data.get("name", DEFAULT_METHOD) != name:
            data.clear()
        data["name"] = name


DEFAULT_METHOD = "one"
# The fields of the single MethodConfig that every method shared before each method owned its
# config (two versions); a section holding exactly these keys comes from an older run and is
# migrated to the fields of the method it names.
_LEGACY = {"name", "temperature", "rampup", "rampup_epochs", "alpha", "teacher"}
LEGACY_METHOD_KEYS = (
    frozenset(_LEGACY),
    frozenset(_LEGACY | {"widths", "a", "b", "c", "student_ce"}),
)


def validate_method(value: Any) -> MethodConfig:
    """Validate a ``method`` section as the config class of the method it names."""
    if isinstance(value, MethodConfig):
        if type(value) is not MethodConfig:
            return value
        value = value.model_dump(mode="json")
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping with a method name, not {type(value).__name__}")
    try:
        config = MethodConfig.variant(value)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    if frozenset(value) in LEGACY_METHOD_KEYS:
        value = {k: v for k, v in value.items() if k in config.model_fields and v is not None}
    return config.model_validate(value)


class TeacherConfig(StrictModel):
    """A teacher trained as an earlier stage of the run: the run's data, schedule and seed.

    Nothing of the student is in it, so another student setting reuses the same teacher stage.
    """

    model: ModelConfig | None = Field(None, description="None: the student's model section")
    method: SerializeAsAny[MethodConfig] = Field(
        default_factory=lambda: validate_method({"name": "vanilla"}),
        description="a one-stage method (vanilla, one, dml, ensemble)",
    )
    epochs: PositiveInt | None = Field(None, description="None: train.epochs")

    @field_validator("method", mode="wrap")
    @classmethod
    def _method_of_its_name(cls, value: Any, handler: Any) -> MethodConfig:
        return validate_method(value)


class TrainConfig(StrictModel):
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
    data_on_device: bool = Field(
        True, description="hold in-memory data sets on the training device (GPU) and augment there"
    )
    compile: bool = Field(False, description="torch.compile the training forward pass")
    log_every: PositiveInt = Field(
        50, description="steps between host syncs (loss check, progress); none in between"
    )
    deterministic: bool = True
    threads: int | None = Field(None, gt=0)
    progress: bool = True


class TrainingConfig(StrictModel):
    """Everything one training run needs."""

    name: str = "onedge"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: SerializeAsAny[MethodConfig] = Field(
        default_factory=lambda: validate_method({"name": DEFAULT_METHOD})
    )
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("method", mode="wrap")
    @classmethod
    def _method_of_its_name(cls, value: Any, handler: Any) -> MethodConfig:
        return validate_method(value)
