"""Several artifacts of one backend measured by one runner process, locally and over SSH."""

from __future__ import annotations

import json
import resource
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from export.manifest import read_manifest
from targets import LocalCpuTarget, ValidationSettings, parse_target
from targets import runner as runner_module
from targets.errors import RunnerFailedError, TargetTimeoutError
from targets.runs import RUNNER_PATH, read_runner_lines

FAST = ["--warmup-seconds", "0.05", "--warmup-calls", "5", "--timed-seconds", "0.1",
        "--timed-calls", "20", "--throughput-calls", "2", "--threads", "1"]  # fmt: skip

# Runs the real runner and appends its argv (one JSON line) to a log: counts the processes.
LOGGING_PYTHON = """#!{python}
import json, subprocess, sys
with open({log!r}, "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(subprocess.run([{python!r}, *sys.argv[1:]]).returncode)
"""


def run_lines(*args: str, timeout: float = 120) -> tuple[int, list[dict]]:
    done = subprocess.run(
        [sys.executable, str(RUNNER_PATH), *args], capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def twin(export: Path, name: str, copy: str) -> Path:
    """A second artifact folder holding the same files (the runner names it by its folder)."""
    return Path(shutil.copytree(export / name, export / copy))


def logging_python(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "argv.log"
    path = tmp_path / "python-logging"
    path.write_text(LOGGING_PYTHON.format(python=sys.executable, log=str(log)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path, log


def measuring_calls(log: Path) -> list[list[str]]:
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [call for call in calls if "--artifact" in call]


def test_one_process_reports_each_artifact_in_order(export_copy: Path) -> None:
    second = twin(export_copy, "onnx-fp32", "onnx-second")
    first = export_copy / "onnx-fp32"
    code, lines = run_lines(
        "--artifact", str(first), "--artifact", str(second),
        "--expect-sha256", read_manifest(first).sha256,
        "--expect-sha256", read_manifest(second).sha256,
        "--data", str(export_copy / "eval.npz"), "--backend", "onnxruntime", *FAST,
    )  # fmt: skip
    assert code == 0 and [line["ok"] for line in lines] == [True, True]
    assert [line["artifact"] for line in lines] == ["onnx-fp32", "onnx-second"]
    assert lines[0]["top1"] == lines[1]["top1"] > 0.9
    assert all(line["latency_calls"] >= 20 and line["machine"]["cores"] for line in lines)


def test_a_failing_artifact_keeps_the_others_results(export_copy: Path) -> None:
    broken = twin(export_copy, "onnx-fp32", "onnx-broken")
    model = broken / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    last = twin(export_copy, "onnx-fp32", "onnx-last")
    code, lines = run_lines(
        "--artifact", str(export_copy / "onnx-fp32"), "--artifact", str(broken),
        "--artifact", str(last),
        "--data", str(export_copy / "eval.npz"), "--backend", "onnxruntime", *FAST,
    )  # fmt: skip
    assert [line["ok"] for line in lines] == [True, False, True]
    assert lines[1]["artifact"] == "onnx-broken"
    assert lines[1]["error"]["kind"] == "artifact-mismatch" and "model.onnx" in str(lines[1])
    assert lines[2]["artifact"] == "onnx-last" and lines[2]["top1"] == lines[0]["top1"]
    assert code == runner_module.EXIT["artifact-mismatch"]  # the first failure's status


def test_an_artifact_past_its_bound_ends_the_runner_with_a_timeout_line(
    export_dir: Path,
) -> None:
    start = time.monotonic()
    code, lines = run_lines(
        "--artifact", str(export_dir / "onnx-fp32"), "--artifact", str(export_dir / "onnx-fp32"),
        "--data", str(export_dir / "eval.npz"), "--backend", "onnxruntime",
        "--timed-seconds", "60", "--artifact-timeout", "2", timeout=60,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert code == runner_module.EXIT["timeout"]
    assert len(lines) == 1 and lines[0]["error"]["kind"] == "timeout"
    assert lines[0]["artifact"] == "onnx-fp32" and "2 s" in lines[0]["error"]["message"]
    with pytest.raises(TargetTimeoutError, match="ran past 2 s.*command_timeout_s"):
        list(read_runner_lines(json.dumps(lines[0]), "", code, "here", "python3", 2))


def test_a_missing_report_fails_after_the_reports_before_it() -> None:
    ok = json.dumps({"ok": True, "artifact": "a"})
    reports = read_runner_lines(ok + "\n", "Segmentation fault", -11, "here", "python3", 2)
    assert next(reports)["artifact"] == "a"
    with pytest.raises(RunnerFailedError, match="status -11 without a report: Segmentation"):
        next(reports)


def test_peak_rss_is_the_artifacts_own_after_a_reset() -> None:
    """The second artifact of a process does not inherit the first one's peak."""
    block = np.ones(200 << 20, dtype=np.uint8)  # 200 MB, every page touched
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    assert runner_module.reset_peak_rss() is True
    assert runner_module.peak_rss_mb(True) < before - 150


def test_local_target_starts_one_runner_per_backend(
    export_copy: Path, tmp_path: Path, fast: ValidationSettings
) -> None:
    python, log = logging_python(tmp_path)
    folders = [
        export_copy / "onnx-fp32",
        export_copy / "openvino-fp32",
        twin(export_copy, "onnx-fp32", "onnx-second"),
        twin(export_copy, "openvino-fp32", "openvino-second"),
    ]
    report = LocalCpuTarget(python=str(python)).run(folders, export_copy / "eval.npz", fast)
    assert [r.artifact for r in report.results] == [f.name for f in folders]
    assert all(r.top1 > 0.9 and r.latency_ms.p50 > 0 for r in report.results)
    calls = measuring_calls(log)
    assert len(calls) == 2  # one per backend, not one per artifact
    assert [call.count("--artifact") for call in calls] == [2, 2]
    assert [call[call.index("--backend") + 1] for call in calls] == ["onnxruntime", "openvino"]
    assert all(call[call.index("--artifact-timeout") + 1] == "120" for call in calls)


@pytest.mark.ssh
def test_ssh_target_measures_a_backends_artifacts_in_one_command(
    export_copy: Path, tmp_path: Path, sshd, ssh_options, fast: ValidationSettings
) -> None:
    python, log = logging_python(tmp_path)
    options = ssh_options.model_copy(update={"python": str(python)})
    target = parse_target(f"ssh://{sshd.user}@127.0.0.1:{sshd.port}", options=options)
    folders = [export_copy / "onnx-fp32", twin(export_copy, "onnx-fp32", "onnx-second")]
    report = target.run(folders, export_copy / "eval.npz", fast)
    assert [r.artifact for r in report.results] == ["onnx-fp32", "onnx-second"]
    assert report.results[0].top1 == report.results[1].top1 > 0.9
    calls = measuring_calls(log)
    assert len(calls) == 1 and calls[0].count("--artifact") == 2


def test_a_timeout_while_monitoring_leaves_no_board_tool_running(
    export_dir: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "tool.pid"
    tool = tmp_path / "board_monitor.py"
    tool.write_text(
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "while True:\n"
        "    print('RAM 1/2MB', flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    code, lines = run_lines(
        "--artifact", str(export_dir / "onnx-fp32"), "--data", str(export_dir / "eval.npz"),
        "--backend", "onnxruntime", "--warmup-seconds", "0", "--timed-seconds", "60",
        "--monitor-cmd", json.dumps([sys.executable, str(tool)]), "--artifact-timeout", "6",
        timeout=60,
    )  # fmt: skip
    assert code == runner_module.EXIT["timeout"] and lines[-1]["error"]["kind"] == "timeout"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # killed: gone once init reaps it
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text()
