"""prefect.yaml for real: a local Prefect server, `prefect --no-prompt deploy --all`, and a
process-pool worker that picks up a run of the edge-pipeline deployment and finishes it.

Everything runs in subprocesses with their own PREFECT_HOME, as a user's shell would, in a copy
of the checkout (prefect.yaml and the packages) so that nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))
# The digits config cut down so the deployed run takes about a minute on 2 cores.
OVERRIDES = [
    "train.epochs=1",
    "train.progress=false",
    "method.rampup_epochs=1",
    "export.formats=onnx",
    "export.precisions=fp32",
    "validate.settings.warmup_seconds=0.1",
    "validate.settings.timed_seconds=0.2",
    "validate.settings.timed_calls=20",
    "validate.settings.throughput_calls=2",
    "validate.gates.max_p99_ms={local-cpu: 1000.0}",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_post(env: dict, path: str) -> list[dict]:
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/{path}", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


CHECKOUT = ("prefect.yaml", "pyproject.toml", "configs", "onedge", "training", "export", "targets",
            "pipeline")  # fmt: skip


def copy_of_the_checkout(where: Path) -> Path:
    """What a worker's ONEDGE_ROOT needs: prefect.yaml, the configs and the packages."""
    where.mkdir(parents=True)
    for name in CHECKOUT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, where / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, where / name)
    return where


def prefect(env: dict, *args: str, cwd: Path, timeout: float = 180) -> str:
    done = subprocess.run(
        [PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(
                f"the Prefect server did not start:\n{(tmp_path / 'server.log').read_text()}"
            )
        time.sleep(1)
    try:
        yield {**env, "PREFECT_API_URL": api}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_deploy_all_and_a_process_worker_finishes_the_pipeline(prefect_server, tmp_path):
    env = prefect_server
    checkout = copy_of_the_checkout(tmp_path / "checkout")
    for pool in ("cpu", "gpu", "edge"):
        prefect(env, "work-pool", "create", pool, "--type", "process", cwd=tmp_path)
    deployed = prefect(env, "--no-prompt", "deploy", "--all", cwd=checkout)
    names = ("edge-pipeline/edge-pipeline", "train/train", "validate/validate", "export/export")
    for name in (*names, "promote/promote"):
        assert name in deployed, deployed

    listed = prefect(env, "deployment", "inspect", "edge-pipeline/edge-pipeline", cwd=tmp_path)
    assert "0 2 * * *" in listed and "configs/digits-one.yaml" in listed

    out = tmp_path / "deployed-run"
    params = json.dumps({"out_dir": str(out), "overrides": OVERRIDES})
    created = prefect(
        env, "deployment", "run", "edge-pipeline/edge-pipeline", "--params", params, cwd=tmp_path
    )
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", created).group(1)

    worker_env = {**env, "ONEDGE_ROOT": str(checkout)}
    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", "cpu", "--run-once"],
        cwd=tmp_path, env=worker_env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    log = worker.stdout + worker.stderr
    assert worker.returncode == 0, log[-4000:]

    runs = api_post(env, "flow_runs/filter")
    ours = next(r for r in runs if r["id"] == run_id)
    assert ours["state_type"] == "COMPLETED", log[-4000:]
    subflows = [r for r in runs if r["parent_task_run_id"] is not None]
    assert len(subflows) == 4 and all(r["state_type"] == "COMPLETED" for r in subflows)
    nightly = [r for r in runs if r["state_type"] == "SCHEDULED" and r["id"] != run_id]
    assert nightly and all("T02:00:00" in r["expected_start_time"] for r in nightly)
    registry = json.loads((out / "registry.json").read_text())
    assert registry["model_name"] == "digits-one-student" and registry["version"] == "1"
    assert (out / "report.md").read_text().startswith("# onedge run: digits-one")
    check_artifacts_through_the_client(env, [run_id, *(r["id"] for r in subflows)])


def check_artifacts_through_the_client(env: dict, flow_run_ids: list[str]) -> None:
    """The run's Prefect artifacts, read back with Prefect's own client from the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
    by_key = {a.key: a for a in found}
    report = by_key["report-digits-one"]
    assert report.type == "markdown" and report.data.startswith("# onedge run: digits-one")
    # every plot travels inside: curves, accuracy-latency, confusion matrix, misclassified grid
    assert report.data.count("](data:image/png;base64,") == report.data.count("![") >= 4
    table = by_key["validation-local-cpu"]
    rows = json.loads(table.data)
    assert table.type == "table" and {r["artifact"] for r in rows} == {"onnx-fp32", "torch-fp32"}
    assert next(r for r in rows if r["artifact"] == "onnx-fp32")["verdict"] == "pass"
