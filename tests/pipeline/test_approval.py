"""registry.approval: ask, under Prefect's test harness: the run pauses, a person answers.

Each test registers a copy of the end-to-end run into a store of its own (so the version would
become champion) through ``promote_flow``, in a thread; the test finds the paused ``approve`` flow
run with Prefect's client and resumes it with input, or lets it time out.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from pipeline.config import dump_config
from pipeline.run_folder import RunFolder

pytestmark = pytest.mark.slow

SKIP = {"mlflow.db", "mlartifacts", ".cache", "registry.json"}


def asking_copy(pipeline_run, tmp_path, timeout_s: int):
    folder = RunFolder(tmp_path / "run")
    shutil.copytree(pipeline_run.out, folder.root, ignore=lambda d, names: SKIP & set(names))
    config = pipeline_run.config.model_copy(deep=True)
    config.registry.tracking_uri = None  # a store of its own: no champion yet
    config.registry.approval = "ask"
    config.registry.approval_timeout_s = timeout_s
    folder.config.write_text(dump_config(config))
    return config, folder


def in_thread(config, folder) -> tuple[threading.Thread, dict]:
    from pipeline.flows.promote_flow import promote_flow

    box: dict = {}

    def target() -> None:
        try:
            box["outcome"] = promote_flow(config, folder.root)
        except BaseException as exc:  # reported by the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def paused_approval(since: float, timeout: float = 120.0):
    """The paused ``approve`` flow run created after ``since`` (a Prefect client read)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    state = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            for run in client.read_flow_runs(flow_run_filter=state):
                if run.created.timestamp() >= since - 1 and run.name and run.state:
                    flow = client.read_flow(run.flow_id)
                    if flow.name == "approve":
                        return run
        time.sleep(0.5)
    raise AssertionError("no paused approve flow run appeared")


def aliases_of(outcome) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
    return {a: str(v) for a, v in client.get_registered_model(outcome.model_name).aliases.items()}


def test_approved_challenger_becomes_champion(pipeline_run, tmp_path):
    from prefect.flow_runs import resume_flow_run
    from prefect.input.run_input import keyset_from_paused_state

    config, folder = asking_copy(pipeline_run, tmp_path, timeout_s=120)
    since = time.time()
    thread, box = in_thread(config, folder)
    paused = paused_approval(since)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the evidence the UI shows with the form
        key = keyset_from_paused_state(paused.state)["description"]
        shown = client.read_flow_run_input(paused.id, key)
    assert "Make version 1 of" in shown and "local-cpu | pass" in shown
    resume_flow_run(paused.id, run_input={"approve": True, "note": "checked the report"})
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    outcome = box["outcome"]
    assert outcome.decision.champion and not outcome.awaiting_approval
    assert "approved in the approval step: checked the report" in outcome.decision.reasons
    assert aliases_of(outcome) == {"candidate": "1", "champion": "1"}
    assert RunFolder(folder.root).registry.read_text().count('"awaiting_approval": false') == 1


def test_without_an_answer_it_stays_candidate(pipeline_run, tmp_path):
    config, folder = asking_copy(pipeline_run, tmp_path, timeout_s=3)
    thread, box = in_thread(config, folder)
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    outcome = box["outcome"]
    assert not outcome.decision.champion and outcome.decision.candidate
    assert any("no approval within 3 s" in r for r in outcome.decision.reasons)
    assert aliases_of(outcome) == {"candidate": "1"}
