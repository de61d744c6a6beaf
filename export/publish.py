"""Publish an export atomically: build it beside DIR, check it, then move each artifact in.

An export is built in a temporary folder next to DIR (same file system, so every move is a
rename), read back through :func:`export.manifest.read_export` (complete, every sha256 checked),
and only then moved into DIR: each artifact folder, then ``eval.npz``, then ``export.json`` last.
Until that last rename DIR still holds the previous export, and ``read_export`` refuses a DIR
whose folders and ``export.json`` disagree, so a killed export is never taken for a good one.

DIR may hold other things (notes, another model's artifacts): an export touches only the
folders the previous ``export.json`` in DIR lists, the ones an export wrote. A folder of the
same name that it did not write, or a symlink, stops the export before anything moves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from export.errors import ExportError
from export.manifest import EVAL_FILE, EXPORT_JSON, ExportIndex, read_export, regular_file


def owned_folders(out_dir: Path) -> set[str]:
    """The artifact folders the export.json in ``out_dir`` lists: those an export wrote."""
    index = Path(out_dir) / EXPORT_JSON
    if not regular_file(index):
        return set()
    try:
        parsed = ExportIndex.model_validate_json(index.read_bytes())
    except ValidationError:
        return set()
    return {entry.folder for entry in parsed.entries()}


@contextmanager
def build_folder(out_dir: Path) -> Iterator[Path]:
    """The folder an export is built in: temporary, private, beside ``out_dir``, removed
    afterwards whatever happens."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        yield build
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _foreign(path: Path, owned: set[str]) -> bool:
    if path.is_symlink():
        return True
    return path.exists() and path.name not in owned


def publish(build: Path, out_dir: Path) -> list[str]:
    """Move the checked export in ``build`` into ``out_dir``; the artifact folders published."""
    build, out_dir = Path(build), Path(out_dir)
    new = list(read_export(build))  # complete, every file checked, or ArtifactError
    if not regular_file(build / EVAL_FILE):
        raise ExportError(f"the export built in {build} has no {EVAL_FILE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    owned = owned_folders(out_dir)
    for path in [*(out_dir / name for name in new)]:
        if _foreign(path, owned):
            raise ExportError(
                f"{path} exists and was not written by an export into {out_dir} (its "
                f"{EXPORT_JSON} does not list it, or it is a symlink): move it away or export "
                "into another folder; nothing was changed"
            )
    for name in (EVAL_FILE, EXPORT_JSON):
        path = out_dir / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ExportError(f"{path} is not a plain file: move it away; nothing was changed")
    retired = build / ".previous"
    retired.mkdir()
    for name in new:
        if (out_dir / name).exists():
            os.replace(out_dir / name, retired / name)
        os.replace(build / name, out_dir / name)
    os.replace(build / EVAL_FILE, out_dir / EVAL_FILE)
    os.replace(build / EXPORT_JSON, out_dir / EXPORT_JSON)  # last: the export is complete
    for name in sorted(owned - set(new)):  # the previous export's folders this one replaces
        old = out_dir / name
        if old.is_dir() and not old.is_symlink():
            os.replace(old, retired / name)
    return new
