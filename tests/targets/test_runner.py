"""The on-board runner, run as a script the way a board runs it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from export.manifest import artifact_hash, build_manifest, read_manifest, write_manifest
from export.openvino import reshape_static
from targets import runner
from targets.runs import RUNNER_PATH
from targets.tegra import parse_tegrastats_line

DATA = Path(__file__).parent / "data"
FAST = ["--warmup-seconds", "0.05", "--warmup-calls", "5", "--timed-seconds", "0.1"]


def run_runner(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, str(RUNNER_PATH), *args], capture_output=True, text=True, timeout=120
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("artifact", "backend"), [("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino")]
)
def test_runner_measures_fp32_artifacts(export_dir: Path, artifact: str, backend: str) -> None:
    code, report = run_runner(
        "--artifact", str(export_dir / artifact), "--data", str(export_dir / "eval.npz"),
        "--backend", backend, "--threads", "1", "--timed-calls", "40", *FAST,
    )  # fmt: skip
    assert code == 0 and report["ok"], report
    assert report["format"] == read_manifest(export_dir / artifact).format
    assert report["sha256"] == read_manifest(export_dir / artifact).sha256
    # a trained model on held-out digits, and FP32 parity with the PyTorch reference
    assert report["top1"] > 0.9
    assert report["agreement"] == 1.0
    assert report["top1"] == report["reference_top1"]
    assert report["max_abs_diff"] < 1e-3
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report["latency_calls"] >= 40 and report["latency_seconds"] >= 0.1
    assert report["throughput"] > 0 and report["throughput_batch"] == 32
    assert report["threads"] == 1 and report["eval_size"] == 400
    assert report["input_shape"] == [1, 1, 8, 8]
    assert report["peak_rss_mb"] > 10
    assert report["machine"]["cores"] >= 1 and report["machine"]["runtimes"][backend]


def test_openvino_fp32_asks_for_f32_inference(export_dir: Path) -> None:
    code, report = run_runner(
        "--artifact", str(export_dir / "openvino-fp32"), "--data", str(export_dir / "eval.npz"),
        "--backend", "openvino", *FAST,
    )  # fmt: skip
    assert code == 0
    assert report["backend_info"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_timing_protocol_counts_calls_and_seconds(export_dir: Path) -> None:
    args = ["--artifact", str(export_dir / "onnx-fp32"), "--data", str(export_dir / "eval.npz")]
    args += ["--backend", "onnxruntime", "--warmup-seconds", "0", "--warmup-calls", "7"]
    code, by_calls = run_runner(*args, "--timed-seconds", "0", "--timed-calls", "123")
    assert code == 0 and by_calls["latency_calls"] == 123
    code, by_time = run_runner(*args, "--timed-seconds", "0.3", "--timed-calls", "1")
    assert code == 0 and by_time["latency_seconds"] >= 0.3 and by_time["latency_calls"] > 1


def test_runner_hash_matches_the_manifest_hash(export_dir: Path) -> None:
    files = read_manifest(export_dir / "onnx-fp32").files
    assert runner.artifact_hash(files) == artifact_hash(files)


def test_runner_refuses_a_modified_file_before_measuring(export_copy: Path) -> None:
    model = export_copy / "onnx-fp32" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    code, report = run_runner(
        "--artifact", str(model.parent), "--data", str(export_copy / "eval.npz"),
        "--backend", "onnxruntime", *FAST,
    )  # fmt: skip
    assert code == runner.EXIT["artifact-mismatch"]
    assert report["error"]["kind"] == "artifact-mismatch"
    assert "model.onnx" in report["error"]["message"]
    assert "latency_ms" not in report


def test_runner_refuses_an_artifact_other_than_the_one_verified(export_dir: Path) -> None:
    code, report = run_runner(
        "--artifact", str(export_dir / "onnx-fp32"), "--data", str(export_dir / "eval.npz"),
        "--backend", "onnxruntime", "--expect-sha256", "0" * 64, *FAST,
    )  # fmt: skip
    assert code == runner.EXIT["artifact-mismatch"]
    assert "differs from the one verified" in report["error"]["message"]


def test_runner_rejects_eval_images_of_the_wrong_shape(export_copy: Path) -> None:
    import numpy as np

    np.savez(export_copy / "bad.npz", images=np.zeros((4, 3, 8, 8), np.float32), labels=np.zeros(4))
    code, report = run_runner(
        "--artifact", str(export_copy / "onnx-fp32"), "--data", str(export_copy / "bad.npz"),
        "--backend", "onnxruntime", *FAST,
    )  # fmt: skip
    assert code == runner.EXIT["data"]
    assert "[3, 8, 8]" in report["error"]["message"]


def test_runner_samples_a_board_monitor_during_the_timed_runs(
    export_dir: Path, tmp_path: Path
) -> None:
    # tegrastats exists only on Jetsons: a stand-in prints its real lines at a fixed interval
    lines = [
        line
        for line in (DATA / "tegrastats_samples.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    tool = tmp_path / "board_monitor.py"
    tool.write_text(
        "import sys, time\n"
        f"lines = {lines!r}\n"
        "i = 0\n"
        "while True:\n"
        "    print(lines[i % len(lines)], flush=True)\n"
        "    i += 1\n"
        "    time.sleep(0.02)\n"
    )
    code, report = run_runner(
        "--artifact", str(export_dir / "onnx-fp32"), "--data", str(export_dir / "eval.npz"),
        "--backend", "onnxruntime", "--warmup-seconds", "0", "--timed-seconds", "0.3",
        "--monitor-cmd", json.dumps([sys.executable, str(tool)]),
    )  # fmt: skip
    assert code == 0
    sampled = report["monitor"]["lines"]
    assert len(sampled) >= 5
    assert all(parse_tegrastats_line(line).ram_total_mb > 0 for line in sampled)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT present")
def test_runner_names_what_to_install_for_a_missing_runtime(export_dir: Path) -> None:
    code, report = run_runner(
        "--artifact", str(export_dir / "tensorrt-fp16"), "--data", str(export_dir / "eval.npz"),
        "--backend", "tensorrt", *FAST,
    )  # fmt: skip
    assert code == runner.EXIT["missing-library"]
    assert report["error"]["library"] == "tensorrt"
    assert "install" in report["error"]["install"].lower()


def test_describe_reports_the_machine() -> None:
    code, report = run_runner("--describe")
    assert code == 0
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["arch"] and machine["python"]
    assert {"numpy", "onnxruntime", "openvino", "tensorrt", "cuda"} <= set(machine["runtimes"])
    assert machine["isa"].startswith(machine["arch"]) and isinstance(machine["cpu_features"], list)


def test_cached_engine_is_used_only_when_its_sha256_matches(tmp_path: Path) -> None:
    engine = str(tmp_path / "key.engine")
    assert runner.read_cached_engine(engine) == (None, None)  # nothing cached: just build
    runner.write_engine(engine, b"serialized engine")
    assert runner.read_cached_engine(engine) == (b"serialized engine", None)
    Path(engine).write_bytes(b"another engine")
    data, note = runner.read_cached_engine(engine)
    assert data is None and "did not match" in note
    Path(engine + ".sha256").unlink()
    data, note = runner.read_cached_engine(engine)
    assert data is None and "no sha256" in note


def test_build_settings_the_tensorrt_lacks_are_reported() -> None:
    old = SimpleNamespace(IBuilderConfig=type("IBuilderConfig", (), {}))
    new = SimpleNamespace(
        IBuilderConfig=type("IBuilderConfig", (), {"builder_optimization_level": 3})
    )
    level = {"builder_optimization_level": 5}
    assert runner.ignored_build_settings(old, level) == ["builder_optimization_level"]
    assert runner.ignored_build_settings(new, level) == []
    assert runner.ignored_build_settings(old, {}) == []


def open_backend(export_dir: Path, artifact: str, backend: str, *extra: str):
    args = runner.parse_args(
        ["--artifact", "-", "--data", "-", "--backend", backend, "--threads", "1", *extra]
    )
    manifest = runner.check_artifact(str(export_dir / artifact), None)
    return runner.BACKENDS[backend](str(export_dir / artifact), manifest, args)


@pytest.mark.parametrize(
    ("artifact", "backend"), [("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino")]
)
def test_thin_call_path_binds_inputs_and_outputs_once(
    export_dir: Path, artifact: str, backend: str
) -> None:
    import numpy as np

    engine = open_backend(export_dir, artifact, backend)
    images = np.load(export_dir / "eval.npz")["images"]
    for batch in (1, 5):
        x = np.ascontiguousarray(images[:batch])
        handle = engine.prepare(x)
        assert engine.run(handle) is None  # the timed call returns nothing, builds nothing
        np.testing.assert_allclose(engine.output(handle), engine(x), atol=1e-5)
        # zero-copy input: the bound tensor is the caller's array, so changing it in place
        # changes what the next run computes, with no new binding
        x[:] = images[10 : 10 + batch]
        engine.run(handle)
        np.testing.assert_allclose(
            engine.output(handle), engine(images[10 : 10 + batch]), atol=1e-5
        )
        assert engine.output(handle) is not engine.output(handle)  # callers get copies


def test_openvino_threads_and_streams_come_from_the_settings(export_dir: Path) -> None:
    engine = open_backend(export_dir, "openvino-fp32", "openvino", "--streams", "1")
    assert engine.threads == 1 and engine.streams == 1
    # what benchmark_app -hint none -nstreams 1 -nthreads 1 sets: no hint, explicit values
    assert engine.info["config"] == {
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": 1,
    }
    code, report = run_runner(
        "--artifact", str(export_dir / "openvino-fp32"), "--data", str(export_dir / "eval.npz"),
        "--backend", "openvino", "--threads", "1", "--streams", "1", *FAST,
    )  # fmt: skip
    assert code == 0 and report["threads"] == 1 and report["streams"] == 1


def test_timed_loop_times_only_the_call() -> None:
    seen = []
    times, wall = runner.timed_loop(seen.append, ["a", "b", "c"], seconds=0.0, calls=7)
    assert seen == ["a", "b", "c", "a", "b", "c", "a"] and len(times) == 7
    assert 0 <= sum(times) <= wall


def test_static_batch1_artifact_is_timed_at_batch_one(export_copy: Path) -> None:
    source, folder = export_copy / "openvino-fp32", export_copy / "openvino-fp32-b1"
    folder.mkdir()
    assert reshape_static(source / "model.xml", folder / "model.xml") == [1, 1, 8, 8]
    fields = read_manifest(source).model_dump(exclude={"files", "sha256", "model_file"})
    fields["input"]["shape"], fields["output"]["shape"] = [1, 1, 8, 8], [1, 10]
    write_manifest(
        folder, build_manifest(folder, ["model.xml", "model.bin"], "model.xml", **fields)
    )
    reports = {}
    for name in ("openvino-fp32", "openvino-fp32-b1"):
        code, reports[name] = run_runner(
            "--artifact", str(export_copy / name), "--data", str(export_copy / "eval.npz"),
            "--backend", "openvino", "--threads", "1", "--batch-size", "32", *FAST,
        )  # fmt: skip
        assert code == 0, reports[name]
    static, dynamic = reports["openvino-fp32-b1"], reports["openvino-fp32"]
    assert static["input_shape"] == [1, 1, 8, 8] and static["throughput_batch"] == 1
    assert dynamic["throughput_batch"] == 32
    # batch 1 is timed once: its throughput is the latency loop's rate, not a second loop's
    assert static["throughput_calls"] == static["latency_calls"]
    assert static["throughput"] == pytest.approx(
        static["latency_calls"] / static["latency_seconds"]
    )
    assert dynamic["throughput_calls"] != dynamic["latency_calls"]
    assert static["top1"] == dynamic["top1"] and static["eval_size"] == dynamic["eval_size"]
    assert static["max_abs_diff"] == pytest.approx(dynamic["max_abs_diff"], abs=1e-5)
