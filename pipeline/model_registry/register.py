"""The MLflow model registry: register a run's student as a version, then seal it.

What is registered is what was validated: the artifact folder is copied byte for byte into the
run's ``model`` folder, under ``data/<artifact>``, beside MLflow's own flavors for it (see
:mod:`pipeline.model_registry.flavors`), and after registering it is downloaded back and its sha256
compared with the manifest and with every target's report.

The sealed version's aliases are decided and moved by :mod:`pipeline.model_registry.aliases`
(all or nothing, under the caller's lock); by-hand promotion and rollback are in
:mod:`pipeline.model_registry.manual`, the approval step in
:mod:`pipeline.model_registry.approval`. Registering is idempotent: a version is keyed by the validated hash, the eval set and the
reports, so a retry reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from export.manifest import ArtifactError, Manifest, read_export, verify_artifact
from onedge.files import atomic_write
from onedge.strict import StrictModel
from pipeline.config import RunConfig, check_model_name
from pipeline.model_registry.aliases import AWAITING, TAG, seal_version
from pipeline.model_registry.flavors import artifact_subpath, write_model_folder
from pipeline.model_registry.promotion import (
    Decision,
    Evidence,
    choose_artifact,
    gather_evidence,
)
from pipeline.model_registry.tracking import connect, guarded, log_run, tracking_uri
from pipeline.run_folder import RunFolder, load_reports, slug
from targets.base import TargetInfo, ValidationReport


class RegistryOutcome(StrictModel):
    """What registering one run did; written to ``DIR/registry.json``."""

    tracking_uri: str
    model_name: str
    version: str
    run_id: str
    artifact: str
    sha256: str
    reused: bool = False
    evidence: Evidence
    decision: Decision
    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> version after the step
    awaiting_approval: bool = Field(
        False, description="registry.approval is ask: champion only once a person approves"
    )


def run_key(evidence: Evidence, reports: dict[str, ValidationReport]) -> str:
    """One version per validated artifact and set of reports."""
    parts = [evidence.sha256, evidence.eval_set_sha256 or "-"]
    parts += [f"{spec}:{reports[spec].created}" for spec in sorted(reports)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def version_tags(
    config: RunConfig, manifest: Manifest, evidence: Evidence, reports: dict, key: str
) -> dict[str, str]:
    tags = {
        "dataset": config.data.name,
        "model": config.model.name,
        "method": config.method.name,
        "branch": str(manifest.branch),
        "artifact": evidence.artifact,
        "format": manifest.format,
        "precision": manifest.precision,
        "sha256": manifest.sha256,
        "checkpoint_sha256": manifest.source_checkpoint_sha256,
        "eval_set_sha256": evidence.eval_set_sha256 or "",
        "top1": "" if evidence.top1 is None else repr(evidence.top1),
        "eval_size": "" if evidence.eval_size is None else str(evidence.eval_size),
        "correct": evidence.correct or "",
        "gates": "pass" if evidence.passed else "fail",
        "required_targets": json.dumps(config.validate.required_targets()),
        "run_key": key,
        "complete": "false",
    }
    tags.update({f"file_sha256.{name}": sha for name, sha in manifest.files.items()})
    for spec, verdict in evidence.verdicts.items():
        tags[f"verdict.{slug(spec)}"] = verdict
        tags.update(fingerprint_tags(slug(spec), reports[spec].target_info))
        result = next(r for r in reports[spec].results if r.artifact == evidence.artifact)
        if result.latency_ms is not None:
            tags[f"p50_ms.{slug(spec)}"] = f"{result.latency_ms.p50:.4f}"
            tags[f"p99_ms.{slug(spec)}"] = f"{result.latency_ms.p99:.4f}"
    return {TAG + k: v for k, v in tags.items()}


def fingerprint_tags(target: str, info: TargetInfo) -> dict[str, str]:
    """The board a version was validated on: instruction set, CPU features, runtime versions."""
    runtimes = {name: version for name, version in info.runtimes.items() if version}
    return {
        f"isa.{target}": info.isa or "",
        f"cpu_features.{target}": ",".join(info.cpu_features),
        f"runtimes.{target}": json.dumps(runtimes, sort_keys=True),
        **({f"emulated.{target}": info.emulated} if info.emulated else {}),
    }


def registered_sha256(client: Any, uri: str, name: str, version: str, artifact: str) -> str:
    """Download a version and check its artifact's files against its manifest; its hash."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="onedge-registered-") as tmp:
        source = client.get_model_version_download_uri(name, version)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=uri, registry_uri=uri
        )
        return verify_artifact(Path(path) / artifact_subpath(artifact)).sha256


def eval_images(run: RunFolder) -> np.ndarray:
    """The export's eval images (raw images when the preprocessing is embedded)."""
    path = run.export / "eval.npz"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: run the export stage first")
    with np.load(path, allow_pickle=False) as data:
        return data["images"]


def versions_filter(name: str) -> str:
    """The MLflow search filter for the versions of ``name`` (a checked, quote-free name)."""
    return f"name = '{check_model_name(name)}'"


def find_version(client: Any, name: str, key: str) -> Any | None:
    versions = client.search_model_versions(versions_filter(name))
    return next((v for v in versions if v.tags.get(TAG + "run_key") == key), None)


def ensure_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description="onedge students (ONE distillation)")


def new_version(
    client: Any,
    name: str,
    run_id: str,
    folder: Path,
    manifest: Manifest,
    tags: dict[str, str],
    eval_images: np.ndarray,
    artifact_path: str = "model",
) -> str:
    """Log the model folder to the run and register it; a failure marks the run FAILED."""
    try:
        with tempfile.TemporaryDirectory(prefix="onedge-model-") as tmp:
            model = write_model_folder(folder, manifest, run_id, Path(tmp) / "model", eval_images)
            client.log_artifacts(run_id, str(model), artifact_path)
        ensure_model(client, name)
        source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        version = str(client.create_model_version(name, source, run_id, tags=tags).version)
    except Exception:
        with contextlib.suppress(Exception):  # the original error is the one to report
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return version


def register_run(
    config: RunConfig,
    run: RunFolder,
    client: Any | None = None,
    lock: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> RegistryOutcome:
    """Log the run, register its chosen artifact, check hashes, move aliases; see module doc.

    ``lock(model name)`` is held around decide-and-move (:func:`apply_decision`).
    """
    reports = load_reports(run, config.validate)
    required = config.validate.required_targets()
    artifact = choose_artifact(reports, required, config.registry.artifact)
    evidence = gather_evidence(artifact, reports, required)
    exported = read_export(run.export)  # the artifact name comes from a report: look it up
    if artifact not in exported:
        raise ArtifactError(f"{artifact!r} is not an artifact of the export in {run.export}")
    manifest = exported[artifact]
    if manifest.sha256 != evidence.sha256:
        raise ArtifactError(
            f"{run.export / artifact} changed since it was validated (sha256 "
            f"{manifest.sha256[:12]}..., validated {evidence.sha256[:12]}...): validate it again"
        )
    uri = tracking_uri(config, run)
    client = client or connect(uri)
    name = config.model_name()
    key = run_key(evidence, reports)
    with guarded(f"registering {artifact} as {name}"):
        found = find_version(client, name, key)
        if found is None:
            run_id = log_run(client, config, run, reports, uri, exported)
            tags = version_tags(config, manifest, evidence, reports, key)
            images = eval_images(run)
            version = new_version(
                client, name, run_id, run.export / artifact, manifest, tags, images
            )
        else:
            run_id, version = found.run_id, str(found.version)
        registered = registered_sha256(client, uri, name, version, artifact)
    decision, aliases = seal_version(
        client, name, version, registered, manifest.sha256, evidence, config.registry, lock
    )
    outcome = RegistryOutcome(
        tracking_uri=uri,
        model_name=name,
        version=version,
        run_id=run_id,
        artifact=artifact,
        sha256=registered,
        reused=found is not None,
        evidence=evidence,
        decision=decision,
        aliases=aliases,
        awaiting_approval=AWAITING in decision.reasons,
    )
    atomic_write(run.registry, outcome.model_dump_json(indent=2))
    return outcome


def attach_files(client: Any, run_id: str, files: list[Path], where: str = "report") -> None:
    """Add files (the report) to a logged run."""
    with guarded(f"logging {where} files to run {run_id}"):
        for path in files:
            client.log_artifact(run_id, str(path), where)
