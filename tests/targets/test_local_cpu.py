"""validate_artifacts on the local-cpu target: the report, the gates, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from export.manifest import ArtifactError
from targets import (
    EvalSetError,
    GatePolicy,
    LocalCpuTarget,
    MissingPythonError,
    MissingRuntimeError,
    ValidationSettings,
    print_report,
    validate_artifacts,
)

GENEROUS = GatePolicy(max_top1_drop=0.005, min_agreement=0.99, default_max_p99_ms=1000.0)


class WatchedTarget(LocalCpuTarget):
    """The local-cpu target, counting how often it was asked to measure."""

    runs = 0

    def run(self, artifacts, eval_set, settings):
        WatchedTarget.runs += 1
        return super().run(artifacts, eval_set, settings)


def test_local_cpu_report(export_dir: Path, tmp_path: Path, fast: ValidationSettings) -> None:
    out = tmp_path / "validate"
    report = validate_artifacts(export_dir, "local-cpu", out, fast, GENEROUS)
    assert report.passed is True
    data = json.loads((out / "report.json").read_text())
    entries = {e["artifact"]: e for e in data["results"]}
    assert sorted(entries) == ["onnx-fp32", "openvino-fp32", "tensorrt-fp16"]
    for name in ("onnx-fp32", "openvino-fp32"):
        entry = entries[name]
        for key in ("artifact", "format", "precision", "target", "top1", "top1_drop",
                    "agreement", "throughput", "verdict", "reasons", "sha256"):  # fmt: skip
            assert entry[key] is not None, key
        assert set(entry["latency_ms"]) >= {"p50", "p90", "p99", "mean"}
        assert entry["verdict"] == "pass" and entry["target"] == "local-cpu"
        assert entry["top1"] > 0.9 and entry["top1_drop"] == 0.0 and entry["agreement"] == 1.0
        assert entry["threads"] == 1 and entry["throughput_batch"] == 16
    skipped = entries["tensorrt-fp16"]
    assert skipped["verdict"] == "skipped" and "cannot run tensorrt" in skipped["reasons"][0]
    assert data["target_info"]["cpu_model"] and data["target_info"]["cores"] >= 1
    assert data["settings"]["timed_calls"] == fast.timed_calls
    assert data["policy"]["min_agreement"] == 0.99 and len(data["eval_set_sha256"]) == 64
    assert [p.name for p in out.iterdir()] == ["report.json"]  # no temp file left behind


def test_a_tight_policy_fails_with_reasons(
    export_dir: Path, tmp_path: Path, fast: ValidationSettings
) -> None:
    policy = GatePolicy(max_p99_ms={"local-cpu": 1e-6}, max_size_mb=0.001)
    report = validate_artifacts(export_dir / "onnx-fp32", "local-cpu", tmp_path, fast, policy,
                                eval_set=export_dir / "eval.npz")  # fmt: skip
    assert report.passed is False
    result = report.result("onnx-fp32")
    assert result.verdict == "fail" and len(result.reasons) == 2
    console = Console(record=True, width=250)
    print_report(report, console)
    text = console.export_text()
    assert "onnx-fp32" in text and "fail" in text and "p99 latency" in text
    assert "failed the gates: onnx-fp32" in text


def test_wrong_sha256_in_manifest_is_refused_before_measuring(
    export_copy: Path, tmp_path: Path, fast: ValidationSettings
) -> None:
    manifest = export_copy / "openvino-fp32" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"]["model.bin"] = "0" * 64
    manifest.write_text(json.dumps(data))
    out = tmp_path / "validate"
    WatchedTarget.runs = 0
    with pytest.raises(ArtifactError, match="model.bin"):
        validate_artifacts(export_copy, WatchedTarget(), out, fast)
    assert WatchedTarget.runs == 0
    assert not out.exists()


def test_missing_eval_set_is_a_clear_error(
    export_copy: Path, tmp_path: Path, fast: ValidationSettings
) -> None:
    (export_copy / "eval.npz").unlink()
    with pytest.raises(EvalSetError, match="--eval-set"):
        validate_artifacts(export_copy, "local-cpu", tmp_path / "out", fast)
    assert not (tmp_path / "out" / "report.json").exists()


def test_no_artifacts_is_a_clear_error(tmp_path: Path, fast: ValidationSettings) -> None:
    with pytest.raises(ArtifactError, match="run the export first"):
        validate_artifacts(tmp_path, "local-cpu", tmp_path / "out", fast)


def test_a_machine_without_the_runtime_names_what_to_install(
    export_dir: Path, numpy_only_python: str, tmp_path: Path, fast: ValidationSettings
) -> None:
    target = LocalCpuTarget(python=numpy_only_python)
    with pytest.raises(MissingRuntimeError, match="pip install onnxruntime"):
        validate_artifacts(export_dir, target, tmp_path / "out", fast)
    assert target.describe().runtimes["onnxruntime"] is None


def test_a_missing_python_is_a_clear_error() -> None:
    with pytest.raises(MissingPythonError, match="no Python at"):
        LocalCpuTarget(python="/opt/no-such/python3").describe()
