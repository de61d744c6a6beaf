"""The results of the train and export tasks, kept in ``DIR/.cache`` as JSON plus file hashes.

A record is one JSON document per task: the cache key, the task's result as plain JSON, and the
sha256 of the files the result stands for (the checkpoint; export.json and eval.npz). It is read
back through a typed model (pydantic), never unpickled: Prefect's own result persistence is not
used for these tasks, because a Prefect result record names its own serializer (cloudpickle by
default) and whoever can write the run folder could plant one (docs/SECURITY.md).

The key covers the task's inputs, onedge's version and a hash of the source of ``training/``,
``export/`` and ``targets/``: after an upgrade, or any change to that code, the task runs again.
A record whose key differs, whose files are gone or changed, or that does not parse, is ignored
and the task runs again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from export.manifest import regular_file
from onedge.files import atomic_write, sha256_file
from onedge.strict import StrictModel

SCHEMA_VERSION = 1
SOURCE_PACKAGES = ("training", "export", "targets")
ROOT = Path(__file__).resolve().parents[1]
R = TypeVar("R")


def onedge_version() -> str:
    try:
        return metadata.version("onedge")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


@functools.cache
def source_hash(root: Path = ROOT, packages: tuple[str, ...] = SOURCE_PACKAGES) -> str:
    """sha256 over the path and content of every ``.py`` file of ``packages`` under ``root``."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def cache_key(task: str, inputs: Any) -> str:
    """The key of one task call: its inputs, onedge's version and the source hash."""
    document = {
        "task": task,
        "inputs": inputs,
        "onedge": onedge_version(),
        "source": source_hash(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


class CacheRecord(StrictModel):
    schema_version: int = SCHEMA_VERSION
    task: str
    key: str
    result: Any
    files: dict[str, str]  # absolute path -> sha256


def record_path(cache_dir: Path, task: str) -> Path:
    return Path(cache_dir) / f"{task}.json"


def load_result(cache_dir: Path, task: str, key: str, kind: type[R]) -> R | None:
    """The cached result of ``task`` under ``key``, or None (absent, stale, changed, invalid)."""
    path = record_path(cache_dir, task)
    if not regular_file(path):
        return None
    try:
        record = CacheRecord.model_validate_json(path.read_bytes())
        if record.schema_version != SCHEMA_VERSION or (record.task, record.key) != (task, key):
            return None
        for name, sha in record.files.items():
            if not regular_file(Path(name)) or sha256_file(Path(name)) != sha:
                return None
        return TypeAdapter(kind).validate_python(record.result)
    except (ValidationError, OSError, ValueError):
        return None


def store_result(
    cache_dir: Path, task: str, key: str, result: R, kind: type[R], files: list[Path]
) -> Path:
    """Write the record of ``result`` atomically, with the sha256 of ``files``."""
    record = CacheRecord(
        task=task,
        key=key,
        result=TypeAdapter(kind).dump_python(result, mode="json"),
        files={str(Path(f).resolve()): sha256_file(Path(f)) for f in files},
    )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return atomic_write(record_path(cache_dir, task), record.model_dump_json(indent=2))
