"""The MLflow model registry: register a run's student, move ``candidate``/``champion``.

What is registered is what was validated: the artifact folder is copied byte for byte into the
run's ``model`` folder, under ``data/<artifact>``, beside MLflow's own flavors for it (see
:mod:`pipeline.model_registry.flavors`), and after registering it is downloaded back and its sha256
compared with the manifest and with every target's report.

Aliases move in one guarded step: their state is read first, and if any call fails half-way
they are put back as they were before the error is raised. Deciding and moving are serialised
per registered model (a lock the caller passes: the flow uses a Prefect global concurrency
limit), and the move re-reads the champion and aborts if it changed since the decision.
Registering is idempotent: a version is keyed by the validated hash, the eval set and the
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
from pipeline.config import RegistryConfig, RunConfig, check_model_name
from pipeline.errors import ChampionChangedError, ModelRegistryError, PromotionError
from pipeline.model_registry.flavors import artifact_subpath, stage_model
from pipeline.model_registry.promotion import (
    Champion,
    Decision,
    Evidence,
    choose_artifact,
    decide,
    gather_evidence,
)
from pipeline.model_registry.tracking import connect, guarded, log_run, tracking_uri
from pipeline.run_folder import RunFolder, load_reports, slug
from targets.base import TargetInfo, ValidationReport

TAG = "onedge."
HISTORY_TAG = "onedge.champion_history"
AWAITING = "champion only on approval (registry.approval: ask)"


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


def aliases_of(client: Any, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def history_tag(champion_alias: str = "champion") -> str:
    """The model tag that lists the past holders of ``champion_alias`` (one per target alias)."""
    return HISTORY_TAG if champion_alias == "champion" else f"{HISTORY_TAG}.{champion_alias}"


def history_of(client: Any, name: str, champion_alias: str = "champion") -> list[str]:
    tags = client.get_registered_model(name).tags
    return [str(v) for v in json.loads(tags.get(history_tag(champion_alias), "[]"))]


def move_aliases(
    client: Any,
    name: str,
    changes: dict[str, str],
    history: list[str] | None = None,
    expect: dict[str, str | None] | None = None,
    champion_alias: str = "champion",
) -> dict[str, str]:
    """Point each alias in ``changes`` at its version (and save ``history``), all or nothing.

    ``expect`` holds what the caller decided on (alias -> version, None for no alias): the
    aliases are read again just before the move, and if one differs, another registration
    moved it meanwhile; nothing is moved and :class:`ChampionChangedError` says so.
    ``champion_alias`` names whose history ``history`` is (one per target alias).
    """
    tag = history_tag(champion_alias)
    with guarded(f"reading the aliases of {name}"):
        model = client.get_registered_model(name)
    before = {alias: str(v) for alias, v in model.aliases.items()}
    before_history = model.tags.get(tag)
    for alias, decided_on in (expect or {}).items():
        if before.get(alias) != decided_on:
            raise ChampionChangedError(
                f"{alias} of {name} moved from {decided_on or 'none'} to "
                f"{before.get(alias) or 'none'} while this run decided (another registration): "
                "nothing was moved; register again to decide against the new one"
            )
    try:
        for alias, version in changes.items():
            if before.get(alias) != version:
                client.set_registered_model_alias(name, alias, version)
        if history is not None:
            client.set_registered_model_tag(name, tag, json.dumps(history))
    except Exception as exc:
        failures = restore_aliases(client, name, changes, before, before_history, tag)
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if failures:
            raise ModelRegistryError(
                f"moving aliases of {name} failed half-way ({text}) and restoring them failed "
                f"too ({failures[0]}): they should be {before}; set them with onedge promote"
            ) from exc
        raise ModelRegistryError(
            f"moving aliases of {name} failed half-way ({text}); aliases left as they were: "
            f"{before or 'none'}"
        ) from exc
    return {**before, **changes}


def restore_aliases(
    client: Any,
    name: str,
    changes: dict[str, str],
    before: dict[str, str],
    history: str | None,
    tag: str = HISTORY_TAG,
) -> list[str]:
    """Put every alias named in ``changes`` (and the history tag) back; the failures, if any."""
    failures = []
    for alias in changes:
        try:
            if alias in before:
                client.set_registered_model_alias(name, alias, before[alias])
            elif alias in aliases_of(client, name):
                client.delete_registered_model_alias(name, alias)
        except Exception as exc:  # keep going: restore as much as possible
            failures.append(f"{alias}: {exc}")
    try:
        if history is not None:
            client.set_registered_model_tag(name, tag, history)
        elif tag in client.get_registered_model(name).tags:
            client.delete_registered_model_tag(name, tag)
    except Exception as exc:
        failures.append(f"history: {exc}")
    return failures


def current_champion(client: Any, name: str, rules: RegistryConfig) -> Champion | None:
    version = aliases_of(client, name).get(rules.champion_alias)
    if version is None:
        return None
    tags = client.get_model_version(name, version).tags
    top1 = tags.get(TAG + "top1")
    size = tags.get(TAG + "eval_size")
    return Champion(
        version=version,
        top1=float(top1) if top1 else None,
        eval_set_sha256=tags.get(TAG + "eval_set_sha256") or None,
        eval_size=int(size) if size and size.isdigit() else None,
        correct=tags.get(TAG + "correct") or None,
    )


def apply_decision(
    client: Any,
    name: str,
    version: str,
    evidence: Evidence,
    rules: RegistryConfig,
    lock: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> tuple[Decision, dict[str, str]]:
    """Decide against the champion and move the aliases, under ``lock(name)``.

    ``lock`` serialises decide-and-move per registered model across processes (the flow passes
    a Prefect global concurrency limit); the move also re-reads the champion and aborts if it
    changed since the decision (:func:`move_aliases`), so even without the lock a race never
    moves a worse version over a better one.
    """
    with (lock or (lambda _: contextlib.nullcontext()))(name):
        return _decide_and_move(client, name, version, evidence, rules)


def seal_version(
    client: Any,
    name: str,
    version: str,
    registered: str,
    validated: str,
    evidence: Evidence,
    rules: RegistryConfig,
    lock: Callable[[str], AbstractContextManager[Any]] | None = None,
    where: str = "",
) -> tuple[Decision, dict[str, str]]:
    """A registered version whose file (sha256 ``registered``) is the one validated gets its
    ``complete`` tag, then :func:`apply_decision`; any other file gets no alias."""
    if registered != validated:
        raise ArtifactError(
            f"version {version} of {name} holds sha256 {registered[:12]}..., but "
            f"{validated[:12]}... was validated{where}: it gets no alias; register again"
        )
    with guarded(f"completing version {version} of {name}"):
        client.set_model_version_tag(name, version, TAG + "complete", "true")
    return apply_decision(client, name, version, evidence, rules, lock)


def _decide_and_move(
    client: Any, name: str, version: str, evidence: Evidence, rules: RegistryConfig
) -> tuple[Decision, dict[str, str]]:
    with guarded(f"reading the champion of {name}"):
        champion = current_champion(client, name, rules)
    if champion is not None and champion.version == version:
        return Decision(candidate=evidence.passed, champion=True, reasons=["already champion"]), (
            aliases_of(client, name)
        )
    decision = decide(evidence, champion, rules)
    if (
        decision.champion and rules.approval == "ask"
    ):  # a person decides (pipeline.model_registry.approval)
        decision = Decision(
            candidate=decision.candidate,
            champion=False,
            reasons=[*decision.reasons, AWAITING],
            comparison=decision.comparison,
        )
    changes: dict[str, str] = {}
    history = None
    if decision.candidate:
        changes[rules.candidate_alias] = version
    if decision.champion:
        changes[rules.champion_alias] = version
        history = history_of(client, name, rules.champion_alias)
        if champion is not None and (not history or history[-1] != champion.version):
            history.append(champion.version)
        history.append(version)
    with guarded(f"tagging version {version} of {name}"):
        client.set_model_version_tag(name, version, TAG + "decision", "; ".join(decision.reasons))
        if decision.comparison is not None:
            c = decision.comparison
            stats = {
                "p_value": repr(c.p_value),
                "difference_ci": json.dumps(c.difference),
                "top1_ci": json.dumps(c.new_top1),
                "champion_top1_ci": json.dumps(c.champion_top1),
                "compared_with": champion.version if champion else "",
            }
            for key, value in stats.items():
                client.set_model_version_tag(name, version, TAG + key, value)
    decided_on = {rules.champion_alias: champion.version if champion else None}
    return decision, move_aliases(
        client, name, changes, history, expect=decided_on, champion_alias=rules.champion_alias
    )


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
            staged = stage_model(folder, manifest, run_id, Path(tmp) / "model", eval_images)
            client.log_artifacts(run_id, str(staged), artifact_path)
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
            run_id = log_run(client, config, run, reports, uri)
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


def settle_approval(
    outcome: RegistryOutcome, approved: bool, why: str, rules: RegistryConfig, run: RunFolder
) -> RegistryOutcome:
    """After the approval step: make the version champion if ``approved``; record ``why``."""
    if not outcome.awaiting_approval:
        return outcome
    client = connect(outcome.tracking_uri)
    aliases = outcome.aliases
    if approved:
        aliases = promote(client, outcome.model_name, outcome.version, rules.champion_alias)
    reasons = [*outcome.decision.reasons, why]
    with guarded(f"tagging version {outcome.version} of {outcome.model_name}"):
        client.set_model_version_tag(
            outcome.model_name, outcome.version, TAG + "decision", "; ".join(reasons)
        )
    decision = outcome.decision.model_copy(update={"champion": approved, "reasons": reasons})
    settled = outcome.model_copy(
        update={"decision": decision, "aliases": aliases, "awaiting_approval": False}
    )
    run.registry.write_text(settled.model_dump_json(indent=2))
    return settled


def attach_files(client: Any, run_id: str, files: list[Path], where: str = "report") -> None:
    """Add files (the report) to a logged run."""
    with guarded(f"logging {where} files to run {run_id}"):
        for path in files:
            client.log_artifact(run_id, str(path), where)


def model_name_in(client: Any, name: str | None) -> str:
    """``name``, or the only registered model in the store."""
    if name:
        return name
    with guarded("listing registered models"):
        names = sorted(m.name for m in client.search_registered_models())
    if len(names) != 1:
        raise PromotionError(
            f"the store holds {len(names)} registered models ({', '.join(names) or 'none'}): "
            "name one with --model"
        )
    return names[0]


def promote(
    client: Any, name: str, version: str, champion_alias: str = "champion", force: bool = False
) -> dict[str, str]:
    """Make ``version`` the champion by hand.

    The version must be complete (its registered files matched what was validated; ``force`` does
    not override this) and must have passed its gates (unless ``force``).
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        with guarded(f"listing versions of {name}"):
            have = sorted(
                int(v.version) for v in client.search_model_versions(versions_filter(name))
            )
        raise PromotionError(
            f"{name} has no version {version}; versions: {have or 'none'}"
        ) from None
    if mv.tags.get(TAG + "complete") != "true":
        raise PromotionError(
            f"version {version} of {name} is not complete: its registered files were never "
            "checked against the validated artifact (or did not match); register the run again"
        )
    if mv.tags.get(TAG + "gates") != "pass" and not force:
        raise PromotionError(
            f"version {version} of {name} did not pass every required gate "
            f"({mv.tags.get(TAG + 'decision', 'no decision recorded')}); add --force to promote it"
        )
    with guarded(f"reading the champion of {name}"):
        current = aliases_of(client, name).get(champion_alias)
        history = history_of(client, name, champion_alias)
    if current == str(version):
        return aliases_of(client, name)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    return move_aliases(
        client,
        name,
        {champion_alias: str(version)},
        [*history, str(version)],
        expect={champion_alias: current},
        champion_alias=champion_alias,
    )


def rollback(client: Any, name: str, champion_alias: str = "champion") -> dict[str, str]:
    """Give the champion alias back to the previous champion on record."""
    with guarded(f"reading the champion of {name}"):
        current = aliases_of(client, name).get(champion_alias)
        history = history_of(client, name, champion_alias)
    if current is None:
        raise PromotionError(f"{name} has no {champion_alias}: nothing to roll back")
    if history and history[-1] == current:
        history.pop()
    if not history:
        raise PromotionError(
            f"version {current} is the only {champion_alias} of {name} on record: "
            "nothing to roll back to"
        )
    return move_aliases(
        client,
        name,
        {champion_alias: history[-1]},
        history,
        expect={champion_alias: current},
        champion_alias=champion_alias,
    )
