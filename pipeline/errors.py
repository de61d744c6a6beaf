"""Typed errors of the pipeline package; each message says what to do next."""

from __future__ import annotations

from onedge.errors import OnedgeError


class PipelineError(OnedgeError):
    """A stage of the pipeline cannot run (a missing input from an earlier stage, ...)."""


class ModelRegistryError(OnedgeError):
    """The MLflow model registry refused or failed an operation."""


class ModelRegistryUnavailableError(ModelRegistryError):
    """The registry could not be reached or was busy: worth another attempt."""


class PromotionError(ModelRegistryError):
    """A promotion or rollback a person asked for cannot be done."""


class ChampionChangedError(ModelRegistryUnavailableError):
    """Another registration moved the champion between this one's decision and its move.

    Nothing was moved; a retry decides again against the new champion.
    """


class NothingPassedError(PipelineError):
    """No artifact passed the gates of every required target; the report is still written.

    ``result`` is what the run produced (report, rows, the registered version without alias).
    ``onedge run`` exits 3 on it, so a scheduler can tell a bad night from a good one.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
