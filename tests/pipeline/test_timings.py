"""Stage timings: what the stopwatch records and how Prefect's and MLflow's shares are formed."""

from __future__ import annotations

import time

import pytest

from pipeline import timings
from pipeline.timings import StageTimes, Stopwatch, mark_called


def test_stopwatch_times_stages_and_prefect_startup() -> None:
    mark_called()
    time.sleep(0.05)  # what Prefect does before the flow's first statement
    clock = Stopwatch()
    with clock.stage("train"):
        time.sleep(0.02)
    time.sleep(0.03)  # between the stages: orchestration
    with clock.stage("register"):
        time.sleep(0.01)
    t = clock.snapshot()
    assert list(t.stages) == ["train", "register"]
    assert t.prefect_startup_s >= 0.05 and t.stages["train"] >= 0.02
    assert t.orchestration_s >= 0.03
    assert t.flow_s == pytest.approx(sum(t.stages.values()) + t.orchestration_s)
    assert t.mlflow_s == t.stages["register"]
    assert Stopwatch().times.prefect_startup_s is None  # the mark is used once


def test_a_stage_that_raises_is_still_timed() -> None:
    clock = Stopwatch()
    with pytest.raises(ValueError), clock.stage("export"):
        raise ValueError("export failed")
    assert "export" in clock.snapshot().stages


def test_shares_and_lines() -> None:
    t = StageTimes(
        stages={"train": 30.0, "register": 3.0, "attach-report": 1.0},
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
    unknown = StageTimes(stages={"train": 1.0}, flow_s=1.0)
    assert "not measured" in "\n".join(unknown.lines()) and unknown.prefect_startup_s is None


def test_no_server_thread_when_an_api_url_is_set(monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert timings.start_prefect_server() is None
