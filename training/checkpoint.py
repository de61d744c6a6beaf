"""Networks rebuilt from checkpoints: the trained model, its config and data spec.

Reading the file is :mod:`training.checkpoint_file`; here the method the config names builds the
network (shared branches or independent peers) and the saved weights load into it strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from onedge.files import sha256_file
from training.checkpoint_file import load_state, read_checkpoint
from training.config import TrainingConfig
from training.data import DatasetSpec
from training.errors import CheckpointError
from training.methods import METHODS
from training.models.base import MultiBranchModel


@dataclass
class LoadedCheckpoint:
    path: Path
    sha256: str
    model: MultiBranchModel
    config: TrainingConfig
    spec: DatasetSpec
    deployed_branch: int
    metrics: dict[str, Any]
    epoch: int
    raw: dict[str, Any]

    @property
    def init_sha256(self) -> str | None:
        """sha256 of the ``model.init`` file the network started from (None: fresh weights)."""
        return self.config.model.init_sha256


def build_network(config: TrainingConfig, spec: DatasetSpec) -> MultiBranchModel:
    """The network a config trains: the method decides (shared branches or independent peers)."""
    return METHODS.get(config.method.name).build_network(
        config.model,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        method=config.method,
    )


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the trained multi-branch model (eval mode) with its config and data spec.

    Only the network is rebuilt: the method's auxiliary modules stay in the file, so they can
    never reach an extracted or exported student.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location)
    try:
        config = TrainingConfig.model_validate(payload["config"])
        spec = DatasetSpec.from_dict(payload["spec"])
        state = payload["model"]
        deployed_branch = int(payload["deployed_branch"])
        metrics = dict(payload["metrics"])
        epoch = int(payload["epoch"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete or malformed: {exc}") from None
    model = build_network(config, spec)
    load_state(model, state, path)
    model.eval()
    return LoadedCheckpoint(
        path=path,
        sha256=sha256_file(path),
        model=model,
        config=config,
        spec=spec,
        deployed_branch=deployed_branch,
        metrics=metrics,
        epoch=epoch,
        raw=payload,
    )
