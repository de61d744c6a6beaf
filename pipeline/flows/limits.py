"""What the flows' tasks share: one-slot limits on boards and registered models, the retry rule."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from pipeline import run_folder
from pipeline.errors import ModelRegistryUnavailableError
from targets.errors import TargetTimeoutError, TargetUnreachableError

LOCAL_BOARD = "local-cpu"
TRANSIENT = (TargetUnreachableError, TargetTimeoutError, ModelRegistryUnavailableError)
# ModelRegistryUnavailableError includes ChampionChangedError: a retry decides again
REGISTRY_WAIT_S = 600.0  # longest wait for another run's decide-and-move on the same model


def transient_fault(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only faults that may pass (network, a busy store)."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


def ensure_board_limits(names: list[str]) -> None:
    """Create a one-slot concurrency limit (a board, a registered model) unless it exists."""
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # another run made it meanwhile
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )


def registry_lock(model_name: str) -> Any:
    """The ``lock`` registering takes: one decide-and-move at a time for ``model_name``, across
    processes and machines sharing the Prefect server (the limit is created here)."""
    limit = run_folder.registry_limit_name(model_name)
    ensure_board_limits([limit])

    def one_at_a_time(name: str) -> AbstractContextManager[Any]:
        return concurrency(limit, occupy=1, timeout_seconds=REGISTRY_WAIT_S, strict=True)

    return one_at_a_time
