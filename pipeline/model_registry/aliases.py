"""Moving ``candidate``/``champion`` on a registered model: all or nothing, under the lock.

Aliases move in one guarded step: their state is read first, and if any call fails half-way
they are put back as they were before the error is raised. Deciding and moving are serialised
per registered model (a lock the caller passes: the flow uses a Prefect global concurrency
limit), and the move re-reads the champion and aborts if it changed since the decision. The
model tag ``onedge.champion_history`` (one per champion alias) lists the past champions that
:mod:`pipeline.model_registry.manual` rolls back to.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from export.manifest import ArtifactError
from pipeline.config import RegistryConfig
from pipeline.errors import ChampionChangedError, ModelRegistryError
from pipeline.model_registry.promotion import Champion, Decision, Evidence, decide
from pipeline.model_registry.tracking import guarded

TAG = "onedge."
HISTORY_TAG = "onedge.champion_history"
AWAITING = "champion only on approval (registry.approval: ask)"


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
        return decide_and_move(client, name, version, evidence, rules)


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


def decide_and_move(
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
