"""Errors of training: data sets, checkpoints and the training loop."""

from __future__ import annotations

from onedge.errors import OnedgeError


class DataError(OnedgeError):
    """A data set is missing, unreadable or does not match what the model expects."""


class CheckpointError(OnedgeError):
    """A checkpoint is corrupt, foreign, or of another architecture."""


class TrainingError(OnedgeError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class BadImageError(DataError):
    """An image file cannot be used: not an image, truncated, empty, or a decompression bomb."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # survives worker processes
        return (type(self), (self.name, self.reason))
