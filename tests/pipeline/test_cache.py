"""DIR/.cache holds JSON records read through a typed model: a planted record runs nothing."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from pipeline import cache
from training.trainer import TrainResult


class Plant:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def trained(tmp_path: Path) -> TrainResult:
    checkpoint = tmp_path / "train" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    return TrainResult(checkpoint.parent, checkpoint, {"deployed_top1": 0.9, "branch_top1": [0.9]})


def test_record_round_trip_and_invalidation(trained: TrainResult, tmp_path: Path) -> None:
    folder = tmp_path / ".cache"
    key = cache.cache_key("train", {"config": {"epochs": 1}})
    path = cache.store_result(folder, "train", key, trained, TrainResult, [trained.checkpoint])
    assert json.loads(path.read_text())["result"]["metrics"]["deployed_top1"] == 0.9
    assert cache.load_result(folder, "train", key, TrainResult) == trained
    other = cache.cache_key("train", {"config": {"epochs": 2}})
    assert cache.load_result(folder, "train", other, TrainResult) is None
    trained.checkpoint.write_bytes(b"other weights")  # the file the record stands for changed
    assert cache.load_result(folder, "train", key, TrainResult) is None


def test_planted_pickle_records_are_never_unpickled(trained: TrainResult, tmp_path: Path) -> None:
    """Case 2: a cloudpickle result record as Prefect writes one, and one under onedge's name."""
    folder = tmp_path / ".cache"
    folder.mkdir()
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Plant(live)))
    assert live.is_dir(), "the payload must be live for the test to mean anything"
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(Plant(marker))).decode()
    prefect_record = {
        "metadata": {
            "storage_key": str(folder / "train.json"),
            "serializer": {"type": "pickle", "picklelib": "pickle"},
            "prefect_version": "3.9.1",
        },
        "result": payload,
    }
    key = cache.cache_key("train", {"config": {}})
    (folder / "train.json").write_text(json.dumps(prefect_record))
    assert cache.load_result(folder, "train", key, TrainResult) is None
    onedge_shaped = {
        "task": "train",
        "key": key,
        "files": {},
        "result": {"__class__": "os.system", "data": f"mkdir {marker}"},
    }
    (folder / "train.json").write_text(json.dumps(onedge_shaped))
    assert cache.load_result(folder, "train", key, TrainResult) is None
    (folder / "train.json").unlink()
    (folder / "train.json").symlink_to(tmp_path / "elsewhere.json")
    assert cache.load_result(folder, "train", key, TrainResult) is None
    assert not marker.exists()


def test_key_covers_version_and_the_source_of_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 14: an upgrade, or any edit of training/, export/ or targets/, is a new key."""
    tree = tmp_path / "tree"
    for package in cache.SOURCE_PACKAGES:
        shutil.copytree(
            cache.ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    before = cache.source_hash(tree)
    assert before == cache.source_hash(cache.ROOT)
    for package in cache.SOURCE_PACKAGES:
        edited = sorted((tree / package).rglob("*.py"))[-1]
        edited.write_text(edited.read_text() + "\n# edited\n")
        after = cache.source_hash.__wrapped__(tree)
        assert after != before, package
        before = after
    key = cache.cache_key("export", {"a": 1})
    monkeypatch.setattr(cache, "onedge_version", lambda: "99.0")
    assert cache.cache_key("export", {"a": 1}) != key
    monkeypatch.undo()
    monkeypatch.setattr(cache, "source_hash", lambda: "0" * 64)
    assert cache.cache_key("export", {"a": 1}) != key
