"""Checkpoints: atomic saving and safe (``weights_only=True``) loading.

A checkpoint holds the model (the network alone, under ``model``), the method's auxiliary modules
(under ``auxiliaries``: adapters and heads that train beside the network), the optimiser, scheduler and AMP scaler states, the completed epoch,
RNG states, the resolved config, the data set spec, the metrics history and the deployed branch.
The config's ``model.init_sha256`` names the state dict file the network started from.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from onedge.errors import first_line
from onedge.files import atomic_write, sha256_file
from training.config import TrainingConfig
from training.errors import CheckpointError
from training.models.base import MultiBranchModel

FORMAT = "onedge-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) atomically: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, buffer.getvalue(), mode=0o600)


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely, turning every failure into one clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure of the weights-only reader means a bad file
        # (random bytes raise IndexError or struct.error as well as UnpicklingError)
        reason = first_line(exc)
        raise CheckpointError(
            f"checkpoint {path} cannot be read (corrupt, truncated or not a safe torch file): "
            f"{reason[:200]}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an onedge checkpoint (no '{FORMAT}' tag); "
            "train one with `onedge train` or pass the right file"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('format_version')}, "
            f"this onedge reads version {FORMAT_VERSION}"
        )
    return payload


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load a state dict strictly; a mismatch means another architecture: say which."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            k = wrong[0]
            detail.append(
                f"{len(wrong)} shape mismatch(es), e.g. {k}: "
                f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            )
        if missing:
            detail.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise CheckpointError(
            f"checkpoint {source} holds another architecture than the configured model: "
            + "; ".join(detail)
        )
    module.load_state_dict(state)


@dataclass
class LoadedCheckpoint:
    path: Path
    sha256: str
    model: MultiBranchModel
    config: TrainingConfig
    spec: Any  # training.data.DatasetSpec
    deployed_branch: int
    metrics: dict[str, Any]
    epoch: int
    raw: dict[str, Any]

    @property
    def init_sha256(self) -> str | None:
        """sha256 of the ``model.init`` file the network started from (None: fresh weights)."""
        return self.config.model.init_sha256


def build_network(config: TrainingConfig, spec: Any) -> MultiBranchModel:
    """The network a config trains: the method decides (shared branches or independent peers)."""
    from training.methods import METHODS

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
    from training.data import DatasetSpec

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
