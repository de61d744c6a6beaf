"""One Prefect test server and one end-to-end pipeline run, shared by the pipeline tests.

The run is made the way a user meets a failure: the first ``edge_pipeline`` call fails in
validation (an error raised from the validation step), the second call of the same config
succeeds. The plain training and export functions are wrapped to count their calls, so the tests
can show that the rerun took training and export from the run folder's cache (DIR/.cache).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import quick_config

# Short but complete: two epochs, CPU formats in FP32 and INT8, short timings, loose p99 budget.
PIPELINE_SETTINGS = {
    "train.epochs": 2,
    "method.rampup_epochs": 1,
    "export.formats": "onnx,openvino",
    "export.precisions": "fp32,int8",
    "export.calibration_size": 128,
    "export.ort_int8.candidates": "[qdq-s8s8-pre]",
    "export.ort_int8.timing_seconds": 0.1,
    "validate.settings.warmup_seconds": 0.1,
    "validate.settings.warmup_calls": 10,
    "validate.settings.timed_seconds": 0.3,
    "validate.settings.timed_calls": 50,
    "validate.settings.throughput_calls": 3,
    "validate.gates.max_p99_ms": "{local-cpu: 1000.0}",
    "validate.retries": 0,
    "registry.retries": 0,
}


def pipeline_config(**overrides):
    return quick_config(**{**PIPELINE_SETTINGS, **overrides})


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@dataclass
class PipelineRun:
    config: object
    out: Path
    result: object
    first_error: BaseException | None
    calls: dict[str, int] = field(default_factory=dict)
    mtimes_after_failure: dict[str, float] = field(default_factory=dict)
    mtimes_after_rerun: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _mtimes(out: Path) -> dict[str, float]:
    return {
        "checkpoint": (out / "train" / "checkpoint.pt").stat().st_mtime_ns,
        "export.json": (out / "export" / "export.json").stat().st_mtime_ns,
    }


@pytest.fixture(scope="session")
def pipeline_run(prefect_server, tmp_path_factory) -> PipelineRun:
    """edge_pipeline on digits: a failed validation, then a rerun of the same config."""
    from pipeline import run_folder
    from pipeline.flows import chain, export_flow, train_flow
    from targets.errors import RunnerFailedError

    config = pipeline_config()
    out = tmp_path_factory.mktemp("pipeline") / "digits-one"
    calls = {"train": 0, "export": 0, "validate": 0, "open_run": 0}
    real_train, real_export = train_flow.run_stage, export_flow.export_checkpoint
    real_validate, real_open = run_folder.validate_on_target, run_folder.open_run

    def counted_train(*args, **kwargs):
        calls["train"] += 1
        return real_train(*args, **kwargs)

    def counted_export(*args, **kwargs):
        calls["export"] += 1
        return real_export(*args, **kwargs)

    def failing_once(*args, **kwargs):
        calls["validate"] += 1
        if calls["validate"] == 1:
            raise RunnerFailedError("the runner failed on local-cpu (injected for the test)")
        return real_validate(*args, **kwargs)

    def counted_open(*args, **kwargs):
        calls["open_run"] += 1
        return real_open(*args, **kwargs)

    seconds = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_flow, "run_stage", counted_train)
        mp.setattr(export_flow, "export_checkpoint", counted_export)
        mp.setattr(run_folder, "validate_on_target", failing_once)
        mp.setattr(run_folder, "open_run", counted_open)
        start = time.perf_counter()
        first_error = None
        try:
            chain.edge_pipeline(config, out)
        except RunnerFailedError as exc:
            first_error = exc
        seconds["first"] = time.perf_counter() - start
        after_failure = _mtimes(out)
        start = time.perf_counter()
        result = chain.edge_pipeline(config, out)
        seconds["rerun"] = time.perf_counter() - start
    return PipelineRun(
        config, out, result, first_error, dict(calls), after_failure, _mtimes(out), seconds
    )


# --- a registry store and a copy of the run folder that registers into it -------------------
SKIP = {"mlflow.db", "mlartifacts", ".cache", "registry.json"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    from pipeline.model_registry.tracking import connect

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    connect(uri)  # creates the tables once for the module
    return uri


@pytest.fixture
def run(pipeline_run, store, tmp_path, request):
    """A copy of the run folder whose config registers into ``store`` under a fresh name."""
    from pipeline.config import dump_config
    from pipeline.run_folder import RunFolder

    folder = RunFolder(tmp_path / "run")
    shutil.copytree(pipeline_run.out, folder.root, ignore=lambda d, names: SKIP & set(names))
    name = "t-" + request.node.name.replace("_", "-").replace("[", "-").strip("]")[:60]
    config = pipeline_run.config.model_copy(deep=True)
    config.registry.tracking_uri, config.registry.model_name = store, name
    folder.config.write_text(dump_config(config))
    return config, folder


# --- one onedge run on the session's photo folder, shared by the image-folder tests ----------
@dataclass
class PhotoRun:
    out: Path
    status: int  # onedge run's exit status
    test_files: list[Path]  # the test split's files, in the split's order


@pytest.fixture(scope="session")
def photo_run(prefect_server, image_folder, tmp_path_factory) -> PhotoRun:
    """``onedge run`` once on ``image_folder`` (tests/pipeline/test_image_folder_run.py's
    settings: 36 px, ONNX FP32 and INT8, one epoch); read-only for the tests that share it."""
    from pipeline.cli import main
    from tests.pipeline.test_image_folder_run import write_config

    root = tmp_path_factory.mktemp("photo-run")
    out = root / "run"
    status = main(["run", "--config", str(write_config(root, image_folder)), "--out", str(out)])
    files = sorted(p for p in (image_folder / "test").rglob("*") if p.is_file())
    return PhotoRun(out, status, files)
