"""Errors of training: data sets, checkpoints and the training loop."""

from __future__ import annotations

from onedge.errors import OnedgeError


class DataError(OnedgeError):
    """A data set is missing, unreadable or does not match what the model expects."""


class CheckpointError(OnedgeError):
    """A checkpoint is corrupt, foreign, or of another architecture."""


class TrainingError(OnedgeError):
    """Training cannot go on (for example the loss became NaN or infinite)."""
