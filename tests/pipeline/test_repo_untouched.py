"""The suite leaves nothing in the repository: no store, no run folder, no Prefect home."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import LITTER_BEFORE, ROOT, STORES, repo_litter


def test_a_pipeline_run_and_default_stores_leave_the_repo_as_it_was(pipeline_run, tmp_path):
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_HOME

    cwd = Path.cwd().resolve()
    assert not cwd.is_relative_to(ROOT)
    # what a test gets without naming a store is one in the temporary working directory
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient()
    client.create_experiment("left-in-the-session-store")
    assert (cwd / "mlflow.db").is_file()
    assert Path(PREFECT_HOME.value()).resolve().is_relative_to(STORES.resolve())
    # the end-to-end run (training, export, validation, MLflow, Prefect) wrote only its folder
    assert (pipeline_run.out / "mlflow.db").is_file()
    assert repo_litter() - LITTER_BEFORE == set()
