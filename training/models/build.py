"""The model catalogue (:data:`MODELS`, name -> factory) and building from a ModelConfig.

Every factory in :data:`MODELS` takes the same keywords::

    factory(*, num_classes, in_channels, image_size, branches, width, branch_point, gate,
            widths=None)

and returns a :class:`MultiBranchModel`. The families register themselves when
``training.models`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from onedge.errors import ConfigError
from onedge.registry import Registry
from training.config import ModelConfig
from training.models.base import MultiBranchModel
from training.models.branched import check_dimensions
from training.models.peers import PeerEnsemble


class ModelFactory(Protocol):
    def __call__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        branches: int,
        width: float,
        branch_point: int,
        gate: bool,
        widths: Sequence[float] | None = None,
    ) -> MultiBranchModel: ...


MODELS: Registry[ModelFactory] = Registry("model")
# name prefix -> the factory of a name no entry lists: the timm family adds "timm/" (any timm CNN)
MODEL_PREFIXES: Registry[Callable[[str], ModelFactory]] = Registry("model name prefix")


def model_factory(name: str) -> ModelFactory:
    """The registered factory, or a family's generic one (``timm/<architecture>`` unlisted)."""
    if name not in MODELS:
        for prefix in MODEL_PREFIXES:
            if name.startswith(prefix):
                return MODEL_PREFIXES.get(prefix)(name.removeprefix(prefix))
    return MODELS.get(name)


def build_model(
    cfg: ModelConfig,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    gate: bool = True,
    widths: Sequence[float] | None = None,
) -> MultiBranchModel:
    """One network with ``cfg.branches`` branches (unknown name: RegistryError).

    ``widths``: one multiplier per branch for the per-branch stages (a family of students).
    """
    factory = model_factory(cfg.name)
    if widths is not None:
        widths = list(widths)
        if len(widths) != cfg.branches or any(not w > 0 for w in widths):
            raise ConfigError(
                f"widths must be {cfg.branches} positive multipliers (one per branch), got {widths}"
            )
    check_dimensions(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        branches=cfg.branches,
        width=cfg.width,
    )
    return factory(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        branches=cfg.branches,
        width=cfg.width,
        branch_point=cfg.branch_point,
        gate=gate,
        widths=widths,
    )


def build_peers(
    cfg: ModelConfig, *, num_classes: int, in_channels: int, image_size: int
) -> PeerEnsemble:
    """``cfg.branches`` independent single-branch networks (DML peers, plain ensembles)."""
    single = cfg.model_copy(update={"branches": 1})
    shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    return PeerEnsemble([build_model(single, **shape, gate=False) for _ in range(cfg.branches)])


def student_base(branch_point: int):
    """Decorator: the family's shared base for a family of students (its first own stage).

    The student ensemble shares the stem of CIFAR ResNets (``1``) and the stem and first stage of
    ImageNet-style networks (``2``).
    """

    def mark(factory: ModelFactory) -> ModelFactory:
        factory.student_branch_point = branch_point  # type: ignore[attr-defined]
        return factory

    return mark


def student_branch_point(name: str) -> int:
    """The branch point at which model ``name``'s students part (unknown name: RegistryError)."""
    factory = MODELS.get(name)
    point = getattr(factory, "student_branch_point", None)
    if point is None:
        raise ConfigError(f"model {name!r} does not declare a shared base for a student family")
    return int(point)
