"""The registry against a real MLflow SQLite store, on copies of the end-to-end run's folder.

Each test registers the run's validated artifacts (real files, real reports) under its own model
name; "better" and "worse" candidates are the same run with its reports' per-image results changed (some
errors fixed, or some right answers broken) and top-1 moved with them, as a new validation of a
retrained student would move them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from export.manifest import ArtifactError
from pipeline.cli import main
from pipeline.errors import ModelRegistryError, PromotionError
from pipeline.model_registry.aliases import HISTORY_TAG
from pipeline.model_registry.manual import promote, rollback
from pipeline.model_registry.register import register_run
from pipeline.model_registry.tracking import connect
from pipeline.run_folder import RunFolder
from targets.base import unpack_bits
from targets.runner import pack_bits

pytestmark = pytest.mark.slow


def fix_images(result: dict, count: int) -> None:
    """Make ``count`` wrong images right (count > 0) or right images wrong (count < 0)."""
    flags = unpack_bits(result["correct"], result["eval_size"])
    pool = np.flatnonzero(~flags if count > 0 else flags)
    assert len(pool) >= abs(count), "not enough images to change"
    flags[pool[: abs(count)]] = count > 0
    result["correct"], result["top1"] = pack_bits(flags), float(flags.mean())


def revalidate(
    folder: RunFolder, *, fix: int = 0, fail: bool = False, eval_set: str | None = None
) -> None:
    """Rewrite the reports as a new validation would: new timestamp, changed figures."""
    for path in folder.validate.glob("*/report.json"):
        report = json.loads(path.read_text())
        report["created"] = datetime.now(timezone.utc).isoformat()
        for r in report["results"]:
            if r["latency_ms"] is None:
                continue
            if fix:
                fix_images(r, fix)
            if fail:
                r["verdict"], r["reasons"] = "fail", ["p99 latency 9.0 ms (limit 1.0 ms)"]
        if eval_set is not None:
            report["eval_set_sha256"] = eval_set
        path.write_text(json.dumps(report))


def aliases(client, name) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_no_champion_then_better_then_worse(run, store):
    config, folder = run
    name = config.model_name()
    first = register_run(config, folder)
    client = connect(store)
    assert (first.version, aliases(client, name)) == ("1", {"candidate": "1", "champion": "1"})

    revalidate(folder, fix=+12)
    better = register_run(config, folder)
    assert better.decision.champion and better.version == "2"
    c = better.decision.comparison
    assert (c.new_only, c.champion_only) == (12, 0) and c.p_value == 2 / 2**12
    tags = client.get_model_version(name, "2").tags
    assert float(tags["onedge.p_value"]) == c.p_value
    assert json.loads(tags["onedge.difference_ci"])["estimate"] > 0
    assert tags["onedge.compared_with"] == "1"

    revalidate(folder, fix=+3)  # 3 more images right than version 2: better, but p = 0.25
    slight = register_run(config, folder)
    assert slight.decision.candidate and not slight.decision.champion
    assert "not significantly better" in slight.decision.reasons[0]
    assert aliases(client, name) == {"candidate": "3", "champion": "2"}

    revalidate(folder, fix=-30)
    worse = register_run(config, folder)
    assert worse.decision.comparison.champion_only >= 27
    assert worse.decision.candidate and not worse.decision.champion
    assert "not better" in worse.decision.reasons[0]
    assert aliases(client, name) == {"candidate": "4", "champion": "2"}
    assert json.loads(client.get_registered_model(name).tags[HISTORY_TAG]) == ["1", "2"]


def test_failed_gate_is_registered_without_alias(run, store):
    config, folder = run
    register_run(config, folder)
    revalidate(folder, fail=True)
    failed = register_run(config, folder)
    client = connect(store)
    assert not failed.decision.candidate and not failed.decision.champion
    assert (
        client.get_model_version(config.model_name(), failed.version).tags["onedge.gates"] == "fail"
    )
    assert aliases(client, config.model_name()) == {"candidate": "1", "champion": "1"}


def test_champion_on_another_eval_set_is_kept(run, store):
    config, folder = run
    register_run(config, folder)
    revalidate(folder, fix=+12, eval_set="0" * 64)
    other = register_run(config, folder)
    assert other.decision.candidate and not other.decision.champion
    assert aliases(connect(store), config.model_name()) == {"candidate": "2", "champion": "1"}


def test_registering_the_same_validation_again_reuses_the_version(run, store):
    config, folder = run
    first = register_run(config, folder)
    again = register_run(config, folder)
    assert (again.version, again.reused, first.reused) == (first.version, True, False)
    assert len(connect(store).search_model_versions(f"name = '{config.model_name()}'")) == 1


def test_registry_error_half_way_leaves_aliases_as_they_were(run, store):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    class FailsOnSecondAlias(MlflowClient):
        """The real client; its second alias write raises, as a store dying mid-way would."""

        calls = 0

        def set_registered_model_alias(self, name, alias, version):
            FailsOnSecondAlias.calls += 1
            if FailsOnSecondAlias.calls == 2:
                raise MlflowException("connection to the store lost (injected)")
            return super().set_registered_model_alias(name, alias, version)

    config, folder = run
    name = config.model_name()
    register_run(config, folder)
    client = connect(store)
    history = client.get_registered_model(name).tags[HISTORY_TAG]

    revalidate(folder, fix=+12)  # a better candidate: both aliases would move
    flaky = FailsOnSecondAlias(tracking_uri=store, registry_uri=store)
    with pytest.raises(ModelRegistryError, match="failed half-way.*left as they were"):
        register_run(config, folder, client=flaky)
    assert FailsOnSecondAlias.calls >= 2  # the first alias did move before the failure
    assert aliases(client, name) == {"candidate": "1", "champion": "1"}
    assert client.get_registered_model(name).tags[HISTORY_TAG] == history

    retried = register_run(config, folder)  # what the flow's retry does: same version, aliases move
    assert retried.reused and aliases(client, name) == {"candidate": "2", "champion": "2"}


def test_registry_error_while_creating_the_version_moves_no_alias(run, store):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    class FailsToCreate(MlflowClient):
        def create_model_version(self, *args, **kwargs):
            raise MlflowException("database is locked (injected)")

    config, folder = run
    register_run(config, folder)
    revalidate(folder, fix=+12)
    flaky = FailsToCreate(tracking_uri=store, registry_uri=store)
    with pytest.raises(ModelRegistryError, match="database is locked") as caught:
        register_run(config, folder, client=flaky)
    assert type(caught.value).__name__ == "ModelRegistryUnavailableError"  # retried by the flow
    client = connect(store)
    assert aliases(client, config.model_name()) == {"candidate": "1", "champion": "1"}
    experiment = client.get_experiment_by_name(config.name).experiment_id
    failed = client.search_runs([experiment], "attributes.status = 'FAILED'")
    assert failed, "the half-logged MLflow run should be marked FAILED"


def test_an_artifact_changed_after_validation_is_not_registered(run, store):
    config, folder = run
    registered = json.loads(
        (folder.validate / "local-cpu" / "report.json").read_text()
    )  # any artifact: auto picks one that passed; tamper with every one
    for r in registered["results"]:
        model = next((folder.export / r["artifact"]).glob("*.onnx"), None) or next(
            (folder.export / r["artifact"]).glob("*.bin"), None
        )
        if model is not None:
            model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        register_run(config, folder)
    assert connect(store).search_model_versions(f"name = '{config.model_name()}'") == []


def test_broken_store_gives_one_clear_error(tmp_path):
    bad = tmp_path / "mlflow.db"
    bad.write_text("this is not a database")
    with pytest.raises(ModelRegistryError, match="opening the MLflow store"):
        connect(f"sqlite:///{bad}")


def test_promote_and_rollback_by_hand(run, store, capsys):
    config, folder = run
    name = config.model_name()
    register_run(config, folder)
    revalidate(folder, fix=+12)
    register_run(config, folder)  # champion 2, history [1, 2]
    revalidate(folder, fail=True)
    failed = register_run(config, folder)  # version 3 failed its gates
    client = connect(store)

    assert main(["rollback", "--run", str(folder.root)]) == 0
    assert aliases(client, name)["champion"] == "1"
    assert "champion -> version 1" in capsys.readouterr().out
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(client, name)
    assert main(["rollback", "--run", str(folder.root)]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err

    assert main(["promote", "--version", "2", "--run", str(folder.root)]) == 0
    assert aliases(client, name)["champion"] == "2"
    assert main(["promote", "--version", failed.version, "--run", str(folder.root)]) == 2
    assert "did not pass every required gate" in capsys.readouterr().err
    promote(client, name, failed.version, force=True)
    assert aliases(client, name)["champion"] == failed.version
    rollback(client, name)
    assert aliases(client, name)["champion"] == "2"
    assert main(["promote", "--version", "99", "--tracking-uri", store, "--model", name]) == 2
    assert "has no version 99" in capsys.readouterr().err


def test_a_version_refused_for_its_hash_is_never_promoted(run, store, monkeypatch, capsys):
    config, folder = run
    name = config.model_name()
    monkeypatch.setattr(
        "pipeline.model_registry.register.registered_sha256", lambda *args: "0" * 64
    )
    with pytest.raises(ArtifactError, match="it gets no alias"):
        register_run(config, folder)
    client = connect(store)
    version = client.get_model_version(name, "1")
    assert version.tags["onedge.complete"] == "false" and version.tags["onedge.gates"] == "pass"
    with pytest.raises(PromotionError, match="not complete"):
        promote(client, name, "1", force=True)
    argv = ["promote", "--version", "1", "--force", "--tracking-uri", store, "--model", name]
    capsys.readouterr()  # what registering printed is not the command's output
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not complete" in err and len(err.strip().splitlines()) == 1
    assert aliases(client, name) == {}


def test_promote_needs_to_know_which_registry(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["promote", "--version", "1"]) == 2
    assert "give --run DIR" in capsys.readouterr().err
    bad = tmp_path / "mlflow.db"
    bad.write_text("this is not a database")
    assert main(["rollback", "--tracking-uri", f"sqlite:///{bad}"]) == 2
    err = capsys.readouterr().err
    assert "opening the MLflow store" in err and len(err.strip().splitlines()) == 1
