"""The board's fingerprint: instruction set and runtime versions, from recorded board files."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from export.manifest import build_manifest, read_manifest, write_manifest
from targets import runner
from targets.base import TargetInfo, ValidationSettings
from targets.runs import info_from_machine
from targets.table import isa_columns, machine_line
from targets.validate import validate_artifacts
from tests.targets.digits_artifacts import write_export_index

BOARDS = Path(__file__).parent / "data" / "boards"


def board(name: str, suffix: str) -> str:
    return (BOARDS / f"{name}.{suffix}").read_text()


def test_orin_nano_fingerprint_from_its_files() -> None:
    prints = runner.fingerprint(
        "aarch64",
        board("orin-nano-jp512", "cpuinfo"),
        board("orin-nano-jp512", "nv_tegra_release"),
        board("orin-nano-jp512", "cuda-version.json"),
        board("orin-nano-jp512", "libs").split(),
        {"onnxruntime": "1.16.3", "tensorrt": None},
    )
    assert prints["arch"] == "aarch64"
    assert prints["cpu_features"] == ["asimd", "asimddp"]  # A78AE: no i8mm, sve or bf16
    assert prints["isa"] == "aarch64 asimddp"
    versions = prints["runtimes"]
    assert (versions["l4t"], versions["jetpack"]) == ("R35.4.1", "5.1.2")
    assert versions["cuda"] == "11.4.19"
    assert versions["tensorrt"] == "8.5.2"  # from libnvinfer.so.8.5.2, not the plugin
    assert versions["onnxruntime"] == "1.16.3"


def test_jetson_nano_fingerprint_from_its_files() -> None:
    prints = runner.fingerprint(
        "aarch64",
        board("nano-jp461", "cpuinfo"),
        board("nano-jp461", "nv_tegra_release"),
        board("nano-jp461", "cuda-version.txt"),
        board("nano-jp461", "libs").split(),
        {"tensorrt": "8.2.1.8"},  # the Python module's version wins over the library name
    )
    assert prints["cpu_features"] == ["asimd"] and prints["isa"] == "aarch64 asimd"
    assert prints["runtimes"]["l4t"] == "R32.7.1" and prints["runtimes"]["jetpack"] == "4.6.1"
    assert prints["runtimes"]["cuda"] == "10.2.300"
    assert prints["runtimes"]["tensorrt"] == "8.2.1.8"
    assert runner.parse_cuda_version(board("nano-jp461", "nvcc")) == "10.2.300"


@pytest.mark.parametrize(
    ("cpuinfo", "features", "isa"),
    [
        ("epyc-avx512-vnni", ["avx2", "avx512f", "avx512_vnni", "avx_vnni"], "x86_64 avx512_vnni"),
        ("haswell", ["avx2"], "x86_64 avx2"),
    ],
)
def test_x86_fingerprint(cpuinfo: str, features: list[str], isa: str) -> None:
    text = (BOARDS / f"{cpuinfo}.cpuinfo").read_text()
    prints = runner.fingerprint("x86_64", text, None, None, [], {})
    assert prints["cpu_features"] == features and prints["isa"] == isa
    assert "l4t" not in prints["runtimes"] and prints["runtimes"]["cuda"] is None


def test_odd_inputs_give_no_fingerprint_claims() -> None:
    assert runner.isa_label("AMD64", []) == "x86_64 (no avx2)"
    assert runner.parse_cpu_features("flags : sse4_2 avx512_vnni_extra\n", "x86_64") == []
    assert runner.parse_l4t("not a release line") is None
    assert runner.parse_l4t("# R36 (release), REVISION: 4.3, GCID: 1") == "R36.4.3"
    assert runner.parse_cuda_version("{not json") is None
    assert runner.tensorrt_from_libs(["libnvinfer.so.8", "libnvinfer.so.x.y"]) is None


def test_runtime_too_old_names_what_it_needs() -> None:
    message = runner.ort_too_old("1.16.3", 10, 18)
    assert message == (
        "runtime too old: needs onnxruntime >= 1.18 (ONNX IR 10, opset 18), "
        "board has onnxruntime 1.16.3"
    )
    assert runner.ort_too_old("1.20.1", 10, 18) is None  # the oldest runtime the boards test
    assert runner.ort_too_old("1.32.0", 12, 25) is None  # past the table: its load error says
    assert runner.ort_too_old("1.14.1", 8, 18) is None


def test_this_machine_is_described_with_its_fingerprint(monkeypatch) -> None:
    monkeypatch.setenv("ONEDGE_CPUINFO", str(BOARDS / "haswell.cpuinfo"))
    monkeypatch.setenv("ONEDGE_EMULATED", "qemu-x86_64 -cpu Haswell")
    info = info_from_machine(runner.describe(), "local-cpu", "local-cpu")
    assert info.isa == "x86_64 avx2" and info.cpu_features == ["avx2"]
    assert info.runtimes["onnxruntime"] == __import__("onnxruntime").__version__
    line = machine_line(info)
    assert "x86_64 avx2 (avx2, emulated by qemu-x86_64 -cpu Haswell)" in line
    assert f"onnxruntime {info.runtimes['onnxruntime']}" in line
    assert isa_columns(["artifact", "p50 ms", "p99 ms"], info)[1:] == [
        "p50 ms [x86_64 avx2, emulated]",
        "p99 ms [x86_64 avx2, emulated]",
    ]


def test_report_carries_the_fingerprint_and_a_too_new_graph_fails_alone(
    export_dir: Path, tmp_path: Path, fast: ValidationSettings
) -> None:
    """An ONNX IR version this ONNX Runtime cannot load: that artifact fails with the reason,
    every other artifact is measured, and each latency names the instruction set."""
    root = Path(shutil.copytree(export_dir, tmp_path / "export"))
    newer = root / "onnx-newer"
    newer.mkdir()
    model = onnx.load(str(root / "onnx-fp32" / "model.onnx"))
    model.ir_version = 99
    onnx.save(model, str(newer / "model.onnx"))
    fields = read_manifest(root / "onnx-fp32").model_dump(
        exclude={"files", "sha256", "model_file", "created"}
    )
    fields["extra"] = {"onnx": {"ir_version": 99, "opset": 17}}
    write_manifest(newer, build_manifest(newer, ["model.onnx"], "model.onnx", **fields))
    write_export_index(root)
    report = validate_artifacts(root, "local-cpu", tmp_path / "out", fast)
    assert isinstance(report.target_info, TargetInfo) and report.target_info.isa
    assert report.target_info.cpu_features and "onnxruntime" in report.target_info.runtimes
    failed = report.result("onnx-newer")
    assert failed.verdict == "fail" and failed.top1 is None
    assert failed.reasons[0].startswith("runtime too old: ")
    assert "ONNX IR 99" in failed.reasons[0] and "board has onnxruntime" in failed.reasons[0]
    measured = report.result("onnx-fp32")
    assert measured.verdict == "pass" and measured.isa == report.target_info.isa
