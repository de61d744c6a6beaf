"""The method interface shared by every distillation method."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from onedge.errors import ConfigError
from onedge.registry import Registry
from training.config import MethodConfig, ModelConfig, TrainingConfig
from training.method_configs import METHOD_CONFIGS
from training.models import build_model
from training.models.base import BranchOutputs, MultiBranchModel
from training.stage_spec import StageSpec

if TYPE_CHECKING:  # the loaded teachers' type only: training.checkpoint imports the methods
    from training.checkpoint import LoadedCheckpoint

METHODS: Registry[type[Method]] = Registry("method")


class Method:
    """A training method: builds its network and computes its loss.

    ``build_network`` returns the multi-branch model that is deployed;
    ``build_auxiliaries`` the method's own trainable modules (adapters, heads), which train beside
    the network and never reach a student; ``taps`` names the feature maps the loss reads;
    ``loss`` maps one batch's outputs to (total, parts). ``epoch`` is fractional (epoch + step/steps)
    so ramp-ups move smoothly.
    """

    name: str = ""
    config: type[MethodConfig] = MethodConfig  # the method's own settings (its ``name`` a Literal)

    def __init__(self, cfg: MethodConfig) -> None:
        if not isinstance(cfg, self.config):
            raise ConfigError(
                f"method {self.name!r} takes a {self.config.__name__}, not {type(cfg).__name__}"
            )
        self.cfg = cfg
        self.taps: tuple[str, ...] = ()
        self.auxiliaries = nn.ModuleDict()

    @classmethod
    def build_network(
        cls,
        model: ModelConfig,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        method: MethodConfig | None = None,
    ) -> MultiBranchModel:
        """The network this method trains; ``method`` carries settings that shape it (widths)."""
        return build_model(
            model, num_classes=num_classes, in_channels=in_channels, image_size=image_size
        )

    def build_auxiliaries(self, network: MultiBranchModel) -> nn.ModuleDict:
        """The method's trainable modules beside ``network`` (none by default).

        Subclasses size them from ``network.feature_info``, set ``self.taps`` and return them;
        the trainer optimises, DDP-wraps and checkpoints them under their own key.
        """
        self.auxiliaries = nn.ModuleDict()
        return self.auxiliaries

    single_stage: bool = True  # one stage, no teachers: it may serve as a teacher stage

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        """The method's recipe (:mod:`training.stages`); one stage by default."""
        return [StageSpec("main", config)]

    def prepare(
        self,
        device: torch.device,
        teachers: list[LoadedCheckpoint],
        inputs: dict[str, Path] | None = None,
    ) -> None:
        """Take the stage's teachers (loaded, checked, frozen) and the files of earlier stages it
        reads (``inputs``, by stage name); most methods take none. Runs before
        ``build_auxiliaries``, so auxiliaries may be sized from what it loads."""
        if teachers:
            raise ConfigError(f"method {self.name!r} learns from no teacher; none can be given")

    def loss(
        self,
        outputs: BranchOutputs,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epoch: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError


class TrainedModules(nn.Module):
    """What trains: the network plus the method's auxiliary modules, as one module for DDP.

    ``forward`` runs the network only; the method's loss calls the auxiliaries. Checkpoints keep
    the two state dicts under separate keys, so loading for export rebuilds the network alone.
    """

    def __init__(self, network: MultiBranchModel, auxiliaries: nn.ModuleDict) -> None:
        super().__init__()
        self.network = network
        self.auxiliaries = auxiliaries

    def forward(self, x: torch.Tensor, taps: tuple[str, ...] = ()) -> BranchOutputs:
        return self.network(x, taps=taps)


def register_method(name: str):
    """Register a Method class under ``name``; its ``config`` class must name the same method."""

    def decorate(cls: type[Method]) -> type[Method]:
        declared = cls.config.model_fields["name"].default
        if declared != name:
            raise ConfigError(
                f"method {name!r}: its config {cls.config.__name__} is named {declared!r}"
            )
        cls.name = name
        METHODS.add(name, cls)
        METHOD_CONFIGS.add(name, cls.config)  # what training.config validates a section as
        return cls

    return decorate


def build_method(cfg: MethodConfig) -> Method:
    return METHODS.get(cfg.name)(cfg)
