"""Teachers: onedge checkpoints loaded safely, checked against the data, frozen.

A teacher is an earlier stage's checkpoint or one the user named (``method.teacher``). It is
loaded with ``weights_only=True`` into the architecture its own config names (a strict state-dict
load), its class count and input shape are checked against the data the student trains on, and it
is identified by the sha256 of its file, not by its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from onedge.errors import ConfigError
from training.checkpoint import LoadedCheckpoint, load_checkpoint


def load_teachers(paths: list[Path], spec: Any, device: torch.device) -> list[LoadedCheckpoint]:
    """Load every teacher checkpoint in eval mode, frozen, on ``device``; refuse a mismatch."""
    teachers = []
    for path in paths:
        loaded = load_checkpoint(Path(path), map_location="cpu")
        theirs = (loaded.spec.num_classes, loaded.spec.in_channels, loaded.spec.image_size)
        ours = (spec.num_classes, spec.in_channels, spec.image_size)
        if theirs != ours:
            raise ConfigError(
                f"teacher {path} was trained for {theirs[0]} classes on {theirs[1]}x{theirs[2]}px "
                f"inputs, the student trains on {ours[0]} classes of {ours[1]}x{ours[2]}px: "
                "give a teacher trained on the same data set"
            )
        loaded.model.to(device).eval()
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        teachers.append(loaded)
    return teachers
