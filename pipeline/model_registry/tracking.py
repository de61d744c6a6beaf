"""The MLflow tracking side: open a store, and log one pipeline run into it.

The run holds the training parameters, metrics and curves, the export and validation files,
every artifact folder, and (after the registry step) the report. The registered model version
points at the run's ``model`` folder (see :mod:`pipeline.model_registry.register`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from export.manifest import EXPORT_JSON, Manifest, artifact_paths, read_export, regular_file
from onedge.errors import OnedgeError
from pipeline.config import RunConfig
from pipeline.errors import ModelRegistryError, ModelRegistryUnavailableError
from pipeline.run_folder import RunFolder, load_baseline, read_json, slug
from targets.base import ValidationReport

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

TRANSIENT_MARKERS = (
    "database is locked",
    "temporarily unavailable",
    "temporarily_unavailable",
    "connection refused",
    "connection reset",
    "max retries exceeded",
    "timed out",
    "503",
)


def default_tracking_uri(run: RunFolder) -> str:
    return f"sqlite:///{run.root / 'mlflow.db'}"


def tracking_uri(config: RunConfig, run: RunFolder) -> str:
    return config.registry.tracking_uri or default_tracking_uri(run)


# Run by a child process: create a new store's tables (MLflow's schema migrations, seconds of
# SQLite DDL) so that registering later finds the store ready.
PREPARE_STORE = (
    "import sys, time\n"
    "from mlflow import MlflowClient\n"
    "client = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1])\n"
    "client.search_experiments(max_results=1)\n"
    "client.search_registered_models(max_results=1)\n"
    "print(time.time())\n"  # when it was done: the parent may wait for it much later
)


class StorePreparation:
    """A new local SQLite store being created by a child process (:func:`prepare_store`)."""

    def __init__(self, uri: str, path: Path) -> None:
        import subprocess
        import sys

        self.uri, self.path, self.started = uri, path, time.time()
        self.seconds: float | None = None  # from the start to the store being ready
        self.process = subprocess.Popen(
            [sys.executable, "-c", PREPARE_STORE, uri],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, timeout: float = 300.0) -> str | None:
        """Wait for the child; None when the store is ready, else why it is not (the store
        file it left is removed, so registering creates the store itself)."""
        import subprocess

        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        if self.process.returncode == 0:
            try:
                self.seconds = max(0.0, float(out.strip().splitlines()[-1]) - self.started)
            except (IndexError, ValueError):
                self.seconds = None
            return None
        self.path.unlink(missing_ok=True)  # a half-migrated store would refuse to open
        last = (err.strip().splitlines() or [f"exit status {self.process.returncode}"])[-1]
        return f"creating the MLflow store {self.uri} beside training failed: {last[:300]}"


def prepare_store(uri: str) -> StorePreparation | None:
    """Start creating a new local SQLite store (``sqlite:///...`` that does not exist yet) in a
    child process, to run beside training; None for a server or an existing store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists() or not path.parent.is_dir():
        return None
    return StorePreparation(uri, path)


def registry_error(exc: BaseException, doing: str) -> ModelRegistryError:
    """The typed error for a failure of the store: transient faults are retried by the flows."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    kind = (
        ModelRegistryUnavailableError
        if any(marker in str(exc).lower() for marker in TRANSIENT_MARKERS)
        else ModelRegistryError
    )
    return kind(f"{doing} failed: {text}")


@contextmanager
def guarded(doing: str) -> Iterator[None]:
    """Turn a failure of MLflow (or of its store) into a typed, one-line error."""
    try:
        yield
    except OnedgeError:
        raise
    except Exception as exc:
        raise registry_error(exc, doing) from exc


def connect(uri: str) -> Any:
    """An MlflowClient on ``uri`` (tracking and registry), checked by one read."""
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ModelRegistryError(f"MLflow store {uri}: folder {folder} does not exist")
    with guarded(f"opening the MLflow store {uri}"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
    return client


def artifact_location(uri: str) -> str | None:
    """For a local store, keep artifacts beside the database; a server decides for itself."""
    if urlsplit(uri).scheme == "sqlite":
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def experiment_id(client: Any, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"train.epochs": "30", ...}`` (lists as JSON), for MLflow params.

    Characters MLflow refuses in a name (``#`` of ``local-cpu#device``) become ``_``.
    """
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            safe = re.sub(r"[^\w\-. /]", "_", str(key))
            out.update(flatten(value, f"{prefix}{safe}."))
        return out
    value = json.dumps(data) if isinstance(data, list | tuple) else str(data)
    return {prefix.rstrip("."): value[:6000]}


def numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric entries of a metrics dict; lists become ``name.0``, ``name.1``, ..."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            out.update({f"{prefix}{key}.{i}": float(v) for i, v in enumerate(value)})
    return out


def validation_metrics(reports: dict[str, ValidationReport]) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec, report in reports.items():
        for r in report.results:
            base = f"validate.{slug(spec)}.{r.artifact}"
            for key, value in [
                ("top1", r.top1), ("top1_drop", r.top1_drop), ("agreement", r.agreement),
                ("p50_ms", r.latency_ms.p50 if r.latency_ms else None),
                ("p99_ms", r.latency_ms.p99 if r.latency_ms else None),
                ("throughput", r.throughput), ("size_mb", r.size_mb),
            ]:  # fmt: skip
                if value is not None:
                    out[f"{base}.{key}"] = float(value)
    return out


def log_run(
    client: Any,
    config: RunConfig,
    run: RunFolder,
    reports: dict[str, ValidationReport],
    uri: str,
    exported: dict[str, Manifest] | None = None,
) -> str:
    """Create the MLflow run of this pipeline run and log everything but the model; its id.

    ``exported``: the export's verified manifests when the caller has just read them
    (:func:`export.manifest.read_export`), so that no artifact is hashed twice.
    """
    from mlflow.entities import Metric, Param, RunTag

    metrics = read_json(run.train / "metrics.json", "training")
    history = read_json(run.train / "history.json", "training")
    exp = experiment_id(client, config.registry.experiment or config.name, uri)
    tags = {
        "onedge.dataset": config.data.name,
        "onedge.model": config.model.name,
        "onedge.method": config.method.name,
        "onedge.run_folder": str(run.root),
    }
    mlrun = client.create_run(exp, run_name=f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_id = mlrun.info.run_id
    params = [Param(k, v) for k, v in flatten(config.model_dump(mode="json")).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    now = int(time.time() * 1000)
    points = [Metric(k, v, now, 0) for k, v in numbers(metrics, "train.").items()]
    for record in history if isinstance(history, list) else []:
        step = int(record.get("epoch", 0))
        points += [Metric(k, v, now, step) for k, v in numbers(record, "epoch.").items()]
    points += [Metric(k, v, now, 0) for k, v in validation_metrics(reports).items()]
    baseline = load_baseline(run)
    if baseline is not None:
        points.append(Metric("validate.torch-fp32.p50_ms", baseline.latency_ms.p50, now, 0))
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i : i + 1000])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    # Only regular files, never a symlink (it could point anywhere on this host), and of the
    # export only what the verified manifests list (docs/SECURITY.md).
    logged = [(run.config, None), (run.export / EXPORT_JSON, "export")]
    logged += [(run.train / n, "training") for n in ("metrics.json", "history.json", "curves.png")]
    logged += [(run.train / "config.yaml", "training"), (run.baseline, "validation")]
    for spec in reports:
        folder = run.target_dir(spec)
        logged += [(p, f"validation/{slug(spec)}") for p in sorted(folder.iterdir())]
    if config.registry.log_artifacts:
        verified = exported if exported is not None else read_export(run.export)
        for name, manifest in verified.items():
            logged += [
                (p, f"artifacts/{name}") for p in artifact_paths(run.export / name, manifest)
            ]
    for path, where in logged:
        if regular_file(path):
            client.log_artifact(run_id, str(path), where)
    return run_id
