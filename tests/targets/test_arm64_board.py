"""The digits artifacts on an emulated arm64 board (tests/arm64_board.py) through the real sshd.

The board is Debian's aarch64 CPython 3.11 under qemu-aarch64 with aarch64 wheels of numpy,
ONNX Runtime (an older one than this machine's: the skew boards have) and OpenVINO; the
unchanged standard-library runner measures there. One small artifact set: the digits CNN of
``export_dir`` in FP32 (ONNX, OpenVINO), and its ONNX FP16 and INT8 graphs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from export.config import Tolerances
from export.manifest import read_manifest
from export.quantize import onnx_to_fp16, parse_ort_candidate, quantize_onnx_cpu
from export.timing import Latency
from targets import SshOptions, ValidationSettings, parse_target, validate_artifacts
from targets.base import ArtifactResult
from targets.gates import GatePolicy, evaluate
from targets.table import isa_columns, machine_line
from tests.arm64_board import BoardUnavailable, find_board
from tests.targets.digits_artifacts import digits_split, write_artifact, write_export_index
from tests.targets.sshd_server import SshServer

pytestmark = [pytest.mark.ssh, pytest.mark.slow]
ONNX = ("onnx-fp32", "onnx-fp16", "onnx-int8")


@pytest.fixture(scope="module")
def board():
    try:
        return find_board()
    except BoardUnavailable as exc:
        pytest.skip(str(exc))


def onnx_variants(export_dir: Path, root: Path) -> Path:
    """``export_dir`` plus onnx-fp16 and onnx-int8 (calibrated on the training digits)."""
    shutil.copytree(export_dir, root)
    x_train, *_ = digits_split()
    spec = read_manifest(root / "onnx-fp32").input
    source = root / "onnx-fp32" / "model.onnx"
    for name in ("onnx-fp16", "onnx-int8"):
        (root / name).mkdir()
    onnx_to_fp16(source, root / "onnx-fp16" / "model.onnx")
    calibration = x_train[:256]
    quantize_onnx_cpu(source, root / "onnx-int8" / "model.onnx", calibration,
                      parse_ort_candidate("qdq-s8s8"))  # fmt: skip
    for name in ("onnx-fp16", "onnx-int8"):
        manifest = write_artifact(root / name, ["model.onnx"], "model.onnx", "onnx",
                                  spec.mean[0], spec.std[0])  # fmt: skip
        data = manifest.model_dump()
        data["precision"] = name.split("-")[1]
        (root / name / "manifest.json").write_text(type(manifest)(**data).model_dump_json())
    write_export_index(root)
    return root


def test_digits_artifacts_on_the_emulated_arm64_board(
    board, export_dir: Path, sshd: SshServer, tmp_path: Path
) -> None:
    export = onnx_variants(export_dir, tmp_path / "export")
    settings = ValidationSettings(
        warmup_seconds=0.0, warmup_calls=2, timed_seconds=0.0, timed_calls=5,
        throughput_calls=1, batch_size=25, threads=1, eval_limit=100, connect_timeout_s=10,
        command_timeout_s=300, retries=0,
    )  # fmt: skip
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    options = SshOptions(known_hosts=known_hosts, key=sshd.user_key, python=board.python,
                         remote_root=str(tmp_path / "remote"), name="arm64-qemu",
                         emulated=True)  # fmt: skip
    target = parse_target(f"ssh://{sshd.user}@127.0.0.1:{sshd.port}", options=options)
    policy = GatePolicy(max_top1_drop=0.02, default_max_p99_ms=0.001)  # a limit none can meet
    x86 = validate_artifacts(export, "local-cpu", tmp_path / "x86", settings, policy)
    arm = validate_artifacts(export, target, tmp_path / "arm64", settings, policy)

    info = arm.target_info
    assert info.arch == "aarch64" and info.isa == "aarch64 i8mm"
    assert {"asimd", "asimddp", "i8mm", "sve", "bf16"} <= set(info.cpu_features)
    assert info.emulated and "qemu-aarch64" in info.emulated
    assert (
        info.runtimes["onnxruntime"] == board.onnxruntime != x86.target_info.runtimes["onnxruntime"]
    )
    assert "latency emulated, latency gates skipped" in machine_line(info)
    assert isa_columns(["p99 ms"], info) == ["p99 ms [aarch64 i8mm, emulated]"]
    tolerance = Tolerances().int8_max_top1_drop
    for name in ONNX:
        here, there = x86.result(name), arm.result(name)
        assert there.sha256 == here.sha256 and there.backend == "onnxruntime"
        assert abs(there.top1 - here.top1) <= tolerance, (name, there.top1, here.top1)
        assert there.top1 > 0.9 and there.verdict == "pass"
        assert any(c.startswith("skipped: latency") for c in there.checks)
    assert x86.result("onnx-fp32").verdict == "fail"  # the same limit holds off the emulator
    openvino = arm.result("openvino-fp32")
    if board.openvino:
        assert openvino.top1 == pytest.approx(x86.result("openvino-fp32").top1, abs=tolerance)
        assert info.runtimes["openvino"]
    else:  # the board has no OpenVINO: not runnable there, not a failure
        assert openvino.verdict == "skipped" and not info.runtimes.get("openvino")
    assert arm.result("tensorrt-fp16").verdict == "skipped"
    assert arm.passed
    print({n: (x86.result(n).top1, arm.result(n).top1) for n in (*ONNX, "openvino-fp32")})
    assert np.isfinite(arm.result("onnx-int8").latency_ms.p50)


def test_emulated_board_skips_latency_gates_and_says_why() -> None:
    result = ArtifactResult(
        artifact="onnx-fp32", format="onnx", precision="fp32", target="arm64", sha256="0" * 64,
        top1=0.98, top1_drop=0.0, latency_ms=Latency(p50=40, p90=45, p99=50, mean=41),
        throughput=10.0,
    )  # fmt: skip
    policy = GatePolicy(default_max_p99_ms=5.0, min_throughput=100.0)
    assert not evaluate(result, policy, "arm64").passed  # a real board's timings are gated
    verdict = evaluate(result, policy, "arm64", emulated="qemu-aarch64")
    assert verdict.passed and any("emulated (qemu-aarch64)" in c for c in verdict.checks)
    assert not any("p99" in c or "throughput 10" in c for c in verdict.checks)
