"""onedge run tells a scheduler a good night from a bad one (case 13).

After test_flows (file order): this run publishes its own validation table under the same key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.config import dump_config

pytestmark = pytest.mark.slow


def test_onedge_run_exits_3_and_the_flow_fails_when_nothing_passes(
    prefect_server, tmp_path, capsys
):
    """Case 13: an impossible latency gate; the report is written, the exit status says so,
    and the terminal of a real ``onedge run`` shows the one line, no traceback."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL

    from pipeline.cli import main
    from tests.pipeline.conftest import pipeline_config

    config = pipeline_config(**{
        "name": "nothing-passes",
        "train.epochs": 1,
        "export.formats": "onnx",
        "export.precisions": "fp32",
        "validate.torch_baseline": "false",
        "validate.gates.max_p99_ms": "{local-cpu: 0.000001}",
    })  # fmt: skip
    config_file = tmp_path / "impossible.yaml"
    config_file.write_text(dump_config(config))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config_file), "--out", str(out), "--set", "x=1"]) == 2
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config_file), "--out",
         str(out)],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},  # the tests' server
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    terminal = done.stdout + done.stderr
    assert done.returncode == 3, terminal[-3000:]
    assert "Traceback" not in terminal and "Encountered exception" not in terminal, terminal
    (said,) = [line for line in done.stderr.splitlines() if "nothing passed:" in line]
    assert "no artifact passed the gates of every required target (local-cpu)" in said
    assert (out / "report.md").is_file() and (out / "registry.json").is_file()
    registered = json.loads((out / "registry.json").read_text())
    assert registered["decision"]["champion"] is False and registered["aliases"] == {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["edge-pipeline"])), limit=200
        )
    (mine,) = [r for r in runs if str(out) in json.dumps(r.parameters, default=str)]
    assert mine.state.type.value == "FAILED"
    assert "no artifact passed" in (mine.state.message or "")
