"""Export publishes atomically and never touches what it did not write (cases 8 and 9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export.config import ExportConfig
from export.errors import ExportError
from export.exporter import export_checkpoint
from export.manifest import read_export
from onedge.files import sha256_file

ONNX_FP32 = ExportConfig(formats="onnx", precisions="fp32", calibration_size=64)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links as their target) -> its sha256."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = "-> " + os.readlink(path)
        elif path.is_file():
            out[key] = sha256_file(path)
    return out


def build_leftovers(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.export-*"))


@pytest.fixture(scope="module")
def first_export(digits_checkpoint: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("published") / "export"
    export_checkpoint(digits_checkpoint, out, ONNX_FP32)
    return out


def test_failed_reexport_keeps_the_previous_artifacts(
    digits_checkpoint: Path, first_export: Path
) -> None:
    before = snapshot(first_export)
    strict = ExportConfig(
        formats="onnx", precisions="fp32", calibration_size=64,
        tolerances={"fp32_max_abs_diff": 1e-12},
    )  # fmt: skip
    # its only artifact fails parity, so nothing is left and the export as a whole fails
    with pytest.raises(ExportError, match="nothing left to validate.*max \\|diff\\|"):
        export_checkpoint(digits_checkpoint, first_export, strict)
    assert snapshot(first_export) == before
    assert list(read_export(first_export)) == ["torch-fp32", "onnx-fp32"]
    assert build_leftovers(first_export) == []


def test_foreign_folder_of_an_artifact_name_stops_the_export(
    digits_checkpoint: Path, tmp_path: Path
) -> None:
    """A user's folder named like an artifact, in a DIR no export wrote: untouched, refused."""
    out = tmp_path / "mixed"
    (out / "onnx-fp32").mkdir(parents=True)
    (out / "onnx-fp32" / "notes.md").write_text("my notes")
    (out / "other-model").mkdir()
    before = snapshot(out)
    with pytest.raises(ExportError, match="onnx-fp32 exists and was not written by an export"):
        export_checkpoint(digits_checkpoint, out, ONNX_FP32)
    assert snapshot(out) == before
    assert build_leftovers(out) == []


def test_symlinked_folder_in_dir_is_a_clear_error(
    digits_checkpoint: Path, first_export: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    out = tmp_path / "linked"
    out.mkdir()
    (out / "onnx-fp32").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ExportError, match="symlink") as info:
        export_checkpoint(digits_checkpoint, out, ONNX_FP32)
    assert "\n" not in str(info.value)
    assert (elsewhere / "keep.txt").read_text() == "keep" and len(list(elsewhere.iterdir())) == 1


def test_killed_export_leaves_the_previous_one_whole(
    digits_checkpoint: Path, first_export: Path, tmp_path: Path
) -> None:
    """SIGKILL while the new export is being built: DIR still reads as the previous export."""
    import shutil

    out = tmp_path / "export"
    shutil.copytree(first_export, out)
    before = snapshot(out)
    argv = [
        sys.executable, "-m", "pipeline.cli", "export", "--checkpoint", str(digits_checkpoint),
        "--out", str(out), "--formats", "onnx,openvino", "--precisions", "fp32",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not any((s / "torch-fp32").is_dir() for s in build_leftovers(out)):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the export never started building"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert snapshot(out) == before
    assert list(read_export(out)) == ["torch-fp32", "onnx-fp32"]
