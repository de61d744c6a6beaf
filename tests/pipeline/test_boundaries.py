"""What crosses into the pipeline from a run folder is checked, never executed (docs/SECURITY.md).

Each test plants what a writer of a shared run folder could plant, on a copy of the end-to-end
run's folder, and shows the pipeline ends safely: a clear one-line error or the right result,
nothing executed, nothing registered, nothing written outside its folder.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from export.manifest import EXPORT_JSON, MANIFEST_NAME, ArtifactError, artifact_hash
from onedge.files import sha256_file
from pipeline import run_folder
from pipeline.config import dump_config
from pipeline.model_registry.register import register_run
from pipeline.model_registry.tracking import connect
from pipeline.run_folder import RunFolder
from targets.base import ValidationSettings

pytestmark = pytest.mark.slow

SKIP = {"mlflow.db", "mlartifacts", ".cache", "registry.json"}
FAST = ValidationSettings(
    warmup_seconds=0.0, warmup_calls=2, timed_seconds=0.0, timed_calls=5, throughput_calls=1
)


class Plant:
    """Unpickling this makes the folder ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def run_copy(pipeline_run, tmp_path, request) -> tuple[object, RunFolder]:
    """A copy of the run folder registering into its own store under a fresh name."""
    folder = RunFolder(tmp_path / "run")
    shutil.copytree(pipeline_run.out, folder.root, ignore=lambda d, names: SKIP & set(names))
    config = pipeline_run.config.model_copy(deep=True)
    config.registry.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config.registry.model_name = "b-" + request.node.name.replace("_", "-")[:50]
    folder.config.write_text(dump_config(config))
    return config, folder


def rewrite_artifact(export: Path, name: str, files: dict[str, bytes]) -> None:
    """Replace files of an artifact and make its manifest and export.json agree, as the
    writer of the folder can: every hash adds up, only the content is hostile."""
    folder = export / name
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for file, data in files.items():
        if "/" not in file:
            (folder / file).write_bytes(data)
        manifest["files"][file] = __import__("hashlib").sha256(data).hexdigest()
    manifest["sha256"] = artifact_hash(manifest["files"])
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    index = json.loads((export / EXPORT_JSON).read_text())
    for entry in [index["torch_fp32"], *index["artifacts"]]:
        if entry["folder"] == name:
            entry["sha256"] = manifest["sha256"]
    (export / EXPORT_JSON).write_text(json.dumps(index))


def test_planted_student_pt2_is_never_unpickled(run_copy, tmp_path):
    """Case 1: a crafted torch-fp32/student.pt2; the baseline is rebuilt from the checkpoint."""
    _, run = run_copy
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Plant(live)))
    assert live.is_dir(), "the payload must be live for the test to mean anything"
    marker = tmp_path / "pwned"
    rewrite_artifact(run.export, "torch-fp32", {"student.pt2": pickle.dumps(Plant(marker))})
    baseline = run_folder.torch_baseline(run.export, run.checkpoint, FAST, run.baseline)
    assert not marker.exists()
    exported = json.loads((run.export / EXPORT_JSON).read_text())["torch_fp32"]["test_top1"]
    assert baseline.top1 == pytest.approx(exported, abs=1e-9)
    assert json.loads(run.baseline.read_text())["top1"] == baseline.top1


def test_baseline_refuses_a_checkpoint_the_export_was_not_made_from(run_copy):
    _, run = run_copy
    other = run.root / "other.pt"
    shutil.copy(run.checkpoint, other)
    with open(other, "ab") as handle:
        handle.write(b"\0")  # another file, still a readable zip for torch
    assert sha256_file(other) != sha256_file(run.checkpoint)
    with pytest.raises(Exception, match="not the checkpoint the export was made from|cannot be"):
        run_folder.torch_baseline(run.export, other, FAST, run.baseline)


def registered_versions(config) -> list:
    client = connect(config.registry.tracking_uri)
    return client.search_model_versions(f"name = '{config.model_name()}'")


def chosen_artifact(config, run: RunFolder) -> str:
    from pipeline.model_registry.promotion import choose_artifact

    reports = run_folder.load_reports(run, config.validate)
    return choose_artifact(reports, config.validate.required_targets(), config.registry.artifact)


def test_registry_refuses_symlinks_and_unlisted_files(run_copy):
    """Case 6: a README.txt -> /etc/passwd link in the validated folder is not registered."""
    config, run = run_copy
    folder = run.export / chosen_artifact(config, run)
    (folder / "README.txt").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="README.txt, which its manifest does not list"):
        register_run(config, run)
    assert registered_versions(config) == []
    (folder / "README.txt").unlink()
    (folder / "notes.txt").write_text("unlisted")
    with pytest.raises(ArtifactError, match="notes.txt"):
        register_run(config, run)
    (folder / "notes.txt").unlink()
    outcome = register_run(config, run)  # the clean folder registers
    assert outcome.version == "1"


def test_registry_refuses_a_manifest_name_that_leaves_the_folder(run_copy, tmp_path):
    """Case 3: a listed ``../../x`` never reaches the registry's staging folder."""
    config, run = run_copy
    name = chosen_artifact(config, run)
    rewrite_artifact(run.export, name, {"../../x": b"planted"})
    with pytest.raises(ArtifactError, match="not a plain file name"):
        register_run(config, run)
    assert registered_versions(config) == []
    assert not list(tmp_path.rglob("x"))


class Interleaving:
    """An MLflow client that runs ``between`` once, after the decision, before the move."""

    def __init__(self, client, between) -> None:
        self._client, self.between = client, between

    def __getattr__(self, name):
        return getattr(self._client, name)

    def set_model_version_tag(self, name, version, key, value):
        if key == "onedge.decision" and self.between is not None:
            between, self.between = self.between, None
            between()
        return self._client.set_model_version_tag(name, version, key, value)


def test_interleaved_registrations_never_crown_the_worse(run_copy, tmp_path):
    """Case 7: A (12 more images right) decides against v1; B (30 more) registers in between."""
    from pipeline.errors import ChampionChangedError
    from tests.pipeline.test_registry import revalidate

    config, run_a = run_copy
    first = register_run(config, run_a)  # v1, champion
    run_b = RunFolder(tmp_path / "run-b")
    shutil.copytree(run_a.root, run_b.root, ignore=lambda d, names: {"registry.json"} & set(names))
    revalidate(run_a, fix=+12)
    revalidate(run_b, fix=+30)
    client = connect(config.registry.tracking_uri)
    crowned = {}

    def register_b() -> None:
        crowned["b"] = register_run(config, run_b)

    with pytest.raises(ChampionChangedError, match="moved from 1 to 3") as info:
        register_run(config, run_a, client=Interleaving(client, register_b))
    assert "\n" not in str(info.value)
    name = config.model_name()
    b = crowned["b"]
    assert (first.version, b.version, b.decision.champion) == ("1", "3", True)
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    assert aliases["champion"] == "3"  # A, the worse, moved nothing
    retried = register_run(config, run_a)  # what the task's retry does: decide again
    assert retried.version == "2" and not retried.decision.champion
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    assert aliases["champion"] == "3"
    history = json.loads(client.get_registered_model(name).tags["onedge.champion_history"])
    assert history == ["1", "3"]  # rollback goes back to 1, as it should


def test_decide_and_move_hold_the_lock(run_copy):
    """The lock the flow passes (a Prefect concurrency limit) is held around decide-and-move."""
    config, run = run_copy
    held = []

    class Lock:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            held.append(("enter", self.name))

        def __exit__(self, *exc):
            held.append(("exit", self.name))

    outcome = register_run(config, run, lock=Lock)
    assert outcome.decision.champion
    assert held == [("enter", config.model_name()), ("exit", config.model_name())]


def test_registration_ran_under_a_one_slot_limit_per_model(pipeline_run):
    from prefect.client.orchestration import get_client

    name = run_folder.registry_limit_name(pipeline_run.config.model_name())
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert limit.limit == 1 and limit.active_slots == 0  # released after the run


def test_a_failing_board_gives_its_slot_back(run_copy, tmp_path):
    """Case 4: whatever way a board fails, the validate task ends and its slot is free again."""
    from prefect.client.orchestration import get_client

    from pipeline.flows.validate_flow import validate_flow
    from targets.errors import TargetUnreachableError
    from tests.targets.sshd_server import free_port

    config, run = run_copy
    spec = f"ssh://nobody@127.0.0.1:{free_port()}"
    (tmp_path / "known_hosts").write_text("")
    config = config.model_copy(deep=True)
    config.validate = config.validate.model_copy(
        update={
            "targets": [spec],
            "boards": {spec: {"known_hosts": str(tmp_path / "known_hosts")}},
            "retries": 0,
            "torch_baseline": False,
            "settings": config.validate.settings.model_copy(
                update={"retries": 0, "connect_timeout_s": 2.0}
            ),
        }
    )
    with pytest.raises(TargetUnreachableError):
        validate_flow(config, run.root)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(run_folder.board_limit_name(spec))
    assert limit.limit == 1 and limit.active_slots == 0
