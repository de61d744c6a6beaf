"""Stage timings: what the stopwatch records and how Prefect's and MLflow's shares are formed."""

from __future__ import annotations

import time

import pytest

from pipeline import prefect_server
from pipeline.durations import StepTimes, Stopwatch, mark_called


def test_stopwatch_times_steps_and_prefect_startup() -> None:
    mark_called()
    time.sleep(0.05)  # what Prefect does before the flow's first statement
    clock = Stopwatch()
    with clock.step("train"):
        time.sleep(0.02)
    time.sleep(0.03)  # between the steps: orchestration
    with clock.step("register"):
        time.sleep(0.01)
    t = clock.snapshot()
    assert list(t.steps) == ["train", "register"]
    assert t.prefect_startup_s >= 0.05 and t.steps["train"] >= 0.02
    assert t.orchestration_s >= 0.03
    assert t.flow_s == pytest.approx(sum(t.steps.values()) + t.orchestration_s)
    assert t.mlflow_s == t.steps["register"]
    assert Stopwatch().times.prefect_startup_s is None  # the mark is used once


def test_a_step_that_raises_is_still_timed() -> None:
    clock = Stopwatch()
    with pytest.raises(ValueError), clock.step("export"):
        raise ValueError("export failed")
    assert "export" in clock.snapshot().steps


def test_shares_and_lines() -> None:
    t = StepTimes(
        steps={"train": 30.0, "register": 3.0, "attach-report": 1.0},
        prefect_startup_s=4.0,
        flow_s=36.0,
    )
    assert t.orchestration_s == pytest.approx(2.0) and t.total_s == 40.0
    summary = t.summary()
    assert summary["prefect_share"] == pytest.approx(6.0 / 40.0)
    assert summary["mlflow_share"] == pytest.approx(4.0 / 40.0)
    assert summary["train_s"] == 30.0
    text = "\n".join(t.lines())
    assert "Prefect 15%, MLflow 10%" in text and "train: 30.0 s" in text
    unknown = StepTimes(steps={"train": 1.0}, flow_s=1.0)
    assert "not measured" in "\n".join(unknown.lines()) and unknown.prefect_startup_s is None


def test_no_server_thread_when_an_api_url_is_set(monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert prefect_server.start_prefect_server() is None


def test_a_new_local_store_is_created_by_a_child_process(tmp_path) -> None:
    """The store register opens is the one the child made: no migration left to run."""
    from mlflow import MlflowClient

    from pipeline.model_registry.tracking import connect, prepare_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = prepare_store(uri)
    assert store is not None and store.process.pid != 0
    while store.process.poll() is None:  # let it finish before anyone asks
        time.sleep(0.1)
    seen_done = time.time()
    assert store.wait() is None
    # the seconds it took, not the seconds until someone asked: it was done before it was seen
    assert 0 < store.seconds <= seen_done - store.started
    assert (tmp_path / "mlflow.db").stat().st_size > 0
    client = connect(uri)  # opens without creating tables
    assert isinstance(client, MlflowClient) and client.search_registered_models() == []
    assert prepare_store(uri) is None  # an existing store is left alone
    assert prepare_store("http://127.0.0.1:5000") is None  # a server makes its own
    assert prepare_store(f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}") is None


def test_a_failed_store_creation_leaves_no_half_made_store(tmp_path, monkeypatch) -> None:
    from pipeline.model_registry import tracking

    monkeypatch.setattr(
        tracking, "PREPARE_STORE", "import sys; open(sys.argv[1][10:], 'w').write('x'); 1/0"
    )
    store = tracking.prepare_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    problem = store.wait()
    assert "ZeroDivisionError" in problem and "beside training failed" in problem
    assert not (tmp_path / "mlflow.db").exists()


def test_the_background_store_is_reported_beside_the_steps() -> None:
    t = StepTimes(steps={"train": 20.0, "register": 2.0}, flow_s=22.0, mlflow_background_s=5.0)
    assert t.summary()["mlflow_background_s"] == 5.0
    assert t.summary()["mlflow_share"] == pytest.approx(2.0 / 22.0)
    assert "MLflow store created beside training: 5.0 s" in "\n".join(t.lines())
