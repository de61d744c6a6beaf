"""Per-target registration: each target's pick becomes its own version and moves its own aliases.

With ``registry.per_target`` and more than one target, :func:`register_per_target` reads every
target's report, picks per target with :func:`pipeline.model_registry.per_target.choose_per_target` (the most
accurate artifact that passed the gates and fits ``validate.budgets[target]``), and registers each
pick under the run config's one registered model, tagged with branch, width and target. Each
target's aliases ``candidate-<target>`` and ``champion-<target>`` follow the same rules as
``champion`` (:func:`pipeline.model_registry.aliases.apply_decision`, evidence from that target alone), with
their own champion history for rollback. What was validated is what is registered: every version
is downloaded back and its sha256 compared with the manifest and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from export.manifest import ArtifactError, Manifest, verify_artifact
from onedge.errors import ConfigError
from onedge.files import atomic_write
from onedge.strict import StrictModel
from pipeline.config import RunConfig
from pipeline.errors import PromotionError
from pipeline.model_registry.aliases import TAG, seal_version
from pipeline.model_registry.manual import promote, rollback
from pipeline.model_registry.per_target import TargetChoice, choose_per_target, target_alias
from pipeline.model_registry.promotion import Evidence, gather_evidence
from pipeline.model_registry.register import (
    RegistryOutcome,
    eval_images,
    find_version,
    new_version,
    registered_sha256,
    run_key,
    version_tags,
)
from pipeline.model_registry.tracking import connect, guarded, log_run, tracking_uri
from pipeline.run_folder import RunFolder, load_reports, slug
from targets.base import ValidationReport

PER_TARGET_FILE = "registry-targets.json"


class TargetOutcome(StrictModel):
    """What registering one target's pick did (no ``registered`` when nothing fitted)."""

    target: str
    choice: TargetChoice
    registered: RegistryOutcome | None = None


class PerTargetOutcome(StrictModel):
    model_name: str
    targets: dict[str, TargetOutcome] = Field(default_factory=dict)


def per_target_mode(config: RunConfig) -> bool:
    """Per-target aliases: asked for, and more than one target (one keeps ``champion``)."""
    return config.registry.per_target and len(config.validate.targets) > 1


def target_rules(config: RunConfig, target: str):
    """The registry rules with this target's alias names."""
    return config.registry.model_copy(
        update={
            "candidate_alias": target_alias("candidate", target),
            "champion_alias": target_alias("champion", target),
        }
    )


def register_per_target(
    config: RunConfig,
    run: RunFolder,
    client: Any | None = None,
    lock: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> PerTargetOutcome:
    """Register every target's pick; see the module docstring. Writes registry-targets.json.

    ``lock(model name)`` is held around each decide-and-move, as in ``register_run``.
    """
    reports = load_reports(run, config.validate)
    check_alias_names(reports)
    choices = choose_per_target(reports.values(), config.validate.budgets)
    uri = tracking_uri(config, run)
    registrar = TargetRegistrar(
        config, run, client or connect(uri), uri, reports, lock, eval_images(run)
    )
    outcome = PerTargetOutcome(model_name=config.model_name())
    for spec, report in reports.items():
        choice = choices[report.target]
        result = TargetOutcome(target=spec, choice=choice)
        outcome.targets[spec] = result
        if choice.pick is not None:
            result.registered = registrar.register(spec, choice.pick)
    atomic_write(run.root / PER_TARGET_FILE, outcome.model_dump_json(indent=2))
    return outcome


def check_alias_names(reports: dict[str, ValidationReport]) -> None:
    """Refuse targets whose alias names would be the same after slugging."""
    aliases_for = {spec: target_alias("champion", spec) for spec in reports}
    if len(set(aliases_for.values())) != len(aliases_for):
        raise ConfigError(
            f"targets {sorted(reports)} give the same alias names ({aliases_for}): "
            "rename one (aliases keep letters, digits, '-' and '_')"
        )


@dataclass
class TargetRegistrar:
    """What registering each target's pick shares; the MLflow run is logged once, at the first
    new version."""

    config: RunConfig
    run: RunFolder
    client: Any
    uri: str
    reports: dict[str, ValidationReport]
    lock: Callable[[str], AbstractContextManager[Any]] | None
    images: np.ndarray
    run_id: str | None = None

    def logged_run(self) -> str:
        if self.run_id is None:
            self.run_id = log_run(self.client, self.config, self.run, self.reports, self.uri)
        return self.run_id

    def register(self, spec: str, pick: str) -> RegistryOutcome:
        """Register ``pick`` for ``spec`` on that target's evidence alone, then seal it."""
        alone = {spec: self.reports[spec]}
        evidence = gather_evidence(pick, alone, [spec])
        folder = self.run.export / pick
        manifest = verify_artifact(folder)
        if manifest.sha256 != evidence.sha256:
            raise ArtifactError(
                f"{folder} changed since it was validated on {spec} (sha256 "
                f"{manifest.sha256[:12]}..., validated {evidence.sha256[:12]}...): validate again"
            )
        name, client = self.config.model_name(), self.client
        key = f"{run_key(evidence, alone)}-{slug(spec)}"
        with guarded(f"registering {pick} for {spec} as {name}"):
            found = find_version(client, name, key)
            if found is None:
                used_run = self.logged_run()
                tags = target_tags(self.config, manifest, evidence, alone, key, spec)
                version = new_version(
                    client,
                    name,
                    used_run,
                    folder,
                    manifest,
                    tags,
                    self.images,
                    f"model-{slug(spec)}",
                )
            else:
                used_run, version = found.run_id, str(found.version)
            registered = registered_sha256(client, self.uri, name, version, pick)
        rules = target_rules(self.config, spec)
        decision, aliases = seal_version(
            client, name, version, registered, manifest.sha256, evidence, rules, self.lock,
            where=f" on {spec}",
        )  # fmt: skip
        return RegistryOutcome(
            tracking_uri=self.uri, model_name=name, version=version, run_id=used_run,
            artifact=pick, sha256=registered, reused=found is not None, evidence=evidence,
            decision=decision, aliases=aliases,
        )  # fmt: skip


def target_tags(
    config: RunConfig,
    manifest: Manifest,
    evidence: Evidence,
    alone: dict[str, ValidationReport],
    key: str,
    spec: str,
) -> dict[str, str]:
    """A version's tags (:func:`version_tags`) with the one target it was chosen for."""
    tags = version_tags(config, manifest, evidence, alone, key)
    tags[TAG + "required_targets"] = f'["{spec}"]'
    tags[TAG + "target"] = spec
    tags[TAG + "width"] = "" if manifest.width is None else repr(manifest.width)
    return tags


def promote_for_target(
    client: Any, name: str, version: str, target: str, force: bool = False
) -> dict[str, str]:
    """Make ``version`` the champion of ``target`` by hand (``champion-<target>``).

    A version registered for another target is refused unless ``force``.
    """
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_model_version(name, str(version)).tags
    except MlflowException:  # promote() says which versions exist
        tags = {}
    registered_for = tags.get(TAG + "target")
    if registered_for is not None and registered_for != target and not force:
        raise PromotionError(
            f"version {version} of {name} was chosen and validated for target {registered_for}, "
            f"not {target}; add --force to promote it there anyway"
        )
    return promote(client, name, str(version), target_alias("champion", target), force=force)


def rollback_for_target(client: Any, name: str, target: str) -> dict[str, str]:
    """Give ``champion-<target>`` back to that target's previous champion."""
    return rollback(client, name, target_alias("champion", target))
