"""The method interface shared by every distillation method."""

from __future__ import annotations

import torch

from training.config import MethodConfig, ModelConfig
from training.models.base import BranchOutputs, MultiBranchModel
from training.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


class Method:
    """A training method: builds its network and computes its loss.

    ``build_network`` returns the multi-branch model the trainer optimises;
    ``loss`` maps one batch's outputs to (total, parts). ``epoch`` is fractional (epoch + step/steps)
    so ramp-ups move smoothly.
    """

    name: str = ""
    default_temperature: float = 1.0

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg
        self.temperature = cfg.temperature or self.default_temperature

    @classmethod
    def build_network(
        cls, model: ModelConfig, *, num_classes: int, in_channels: int, image_size: int
    ) -> MultiBranchModel:
        from training.models import build_model

        return build_model(
            model, num_classes=num_classes, in_channels=in_channels, image_size=image_size
        )

    def prepare(self, device: torch.device) -> None:
        """Load anything the method needs beyond the network (a teacher, for example)."""

    def loss(
        self,
        outputs: BranchOutputs,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epoch: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError


def build_method(cfg: MethodConfig) -> Method:
    return METHODS.get(cfg.name)(cfg)
