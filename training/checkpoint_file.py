"""Checkpoint files: atomic writing, safe (``weights_only=True``) reading, strict state loading.

The file side of a checkpoint, apart from rebuilding a network from one
(:mod:`training.checkpoint`): a file is an onedge checkpoint when it carries the format tag and
version; anything else (corrupt, truncated, foreign, unsafe) is one :class:`CheckpointError`.
A checkpoint holds the model (the network alone, under ``model``), the method's auxiliary modules
(under ``auxiliaries``: adapters and heads that train beside the network), the optimiser,
scheduler and AMP scaler states, the completed epoch, RNG states, the resolved config, the data
set spec, the metrics history and the deployed branch. The config's ``model.init_sha256`` names
the state dict file the network started from.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onedge.errors import first_line
from onedge.files import atomic_write
from training.errors import CheckpointError

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
