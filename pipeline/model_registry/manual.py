"""Promote and roll back by hand (``onedge promote``/``onedge rollback``).

A version is promoted only when it is complete (its registered files matched what was
validated) and, unless forced, passed its gates; a rollback gives the champion alias back to the
previous champion on record. Both move the alias through :func:`move_aliases` (all or nothing,
aborting if the champion moved meanwhile).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PromotionError
from pipeline.model_registry.aliases import TAG, aliases_of, history_of, move_aliases
from pipeline.model_registry.register import versions_filter
from pipeline.model_registry.tracking import guarded


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
