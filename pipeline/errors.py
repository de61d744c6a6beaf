"""Typed errors of the pipeline package; each message says what to do next."""

from __future__ import annotations

from training.errors import OnedgeError


class PipelineError(OnedgeError):
    """A stage of the pipeline cannot run (a missing input from an earlier stage, ...)."""


class ModelRegistryError(OnedgeError):
    """The MLflow model registry refused or failed an operation."""


class ModelRegistryUnavailableError(ModelRegistryError):
    """The registry could not be reached or was busy: worth another attempt."""


class PromotionError(ModelRegistryError):
    """A promotion or rollback a person asked for cannot be done."""
