"""The manifest every artifact folder carries (docs/DESIGN.md rule 7).

An artifact is a folder: the model files plus ``manifest.json``. The manifest records the
sha256 of every file and one artifact hash over all of them; what was validated is what gets
registered. An export folder lists its artifacts in ``export.json``.

This module is the one reader of artifact and export folders (docs/SECURITY.md): validation,
the SSH upload, the registry and the tracking log all go through :func:`verify_artifact` or
:func:`read_export`, which accept plain file names only (no separators, no ``..``, no absolute
paths), no symlinks, no file the manifest does not list, every sha256 checked, and refuse an
incomplete export naming what is missing. ``targets/runner.py`` applies the same rules on the
board (it cannot import this module).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from onedge.errors import OnedgeError, first_line
from onedge.files import atomic_write, sha256_file
from onedge.strict import StrictModel
from training.image_transform import EvalTransform

MANIFEST_NAME = "manifest.json"
EXPORT_JSON = "export.json"
EVAL_FILE = "eval.npz"
AGAIN = "the export was interrupted or never ran: run the export first"
SCHEMA_VERSION = 1

Format = Literal["torch", "onnx", "openvino", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]


class ArtifactError(OnedgeError):
    """An artifact folder is missing files, corrupt, or does not match its manifest."""


def plain_name(name: str, what: str = "file name") -> str:
    """``name`` if it is one plain file name: no separator, no ``..``, not absolute, not empty."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or name != name.strip()
    ):
        raise ValueError(f"{what} {name!r} is not a plain file name (no folders, no '..')")
    return name


def why(exc: Exception) -> str:
    """One line: the first field a pydantic error names and what is wrong with it."""
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}"[:300]
    return first_line(exc)


def regular_file(path: Path) -> bool:
    """True for a regular file that is not a symlink."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class InputSpec(StrictModel):
    name: str = "input"
    shape: list[int]  # -1 marks the dynamic batch axis
    dtype: str = "float32"
    layout: str = "NCHW"
    mean: list[float]
    std: list[float]
    scale: float = Field(1.0, description="raw pixel value divided by this before mean/std")
    preprocessing: Literal["embedded", "external"] = Field(
        "external",
        description="embedded: the model takes raw images and applies scale, mean and std "
        "itself; external: the caller feeds (raw / scale - mean) / std in NCHW",
    )
    value_range: list[float] | None = Field(None, description="range of raw input values")
    transform: EvalTransform | None = Field(
        None,
        description="how an image file becomes one input (size, resize policy, crop_pct, "
        "interpolation, channel order, mean/std, value range): the eval transform that made the "
        "calibration and eval sets (training.image_transform); None in older manifests",
    )


class OutputSpec(StrictModel):
    name: str = "logits"
    shape: list[int]


class Manifest(StrictModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    format: Format
    precision: Precision
    files: dict[str, str]  # relative path -> sha256
    sha256: str  # artifact hash over ``files``
    model_file: str  # the file a runtime loads (relative path)
    input: InputSpec
    output: OutputSpec
    class_names: list[str]
    source_checkpoint_sha256: str
    init_sha256: str | None = Field(
        None, description="sha256 of the model.init file the student started from (None: fresh)"
    )
    branch: int
    width: float | None = Field(None, description="the branch's width multiplier (families)")
    config: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _plain_files(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            plain_name(name, "listed file")
            if name == MANIFEST_NAME:
                raise ValueError(f"the manifest lists itself ({MANIFEST_NAME})")
        return files

    @field_validator("model_file")
    @classmethod
    def _plain_model_file(cls, name: str) -> str:
        return plain_name(name, "model file")


def artifact_hash(files: dict[str, str]) -> str:
    """One hash over the (path, sha256) pairs, independent of their order."""
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"artifact file {path} does not exist")
        out[name] = sha256_file(path)
    return out


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename)."""
    # world-readable: artifacts are read by other users and hosts
    return atomic_write(Path(folder) / MANIFEST_NAME, manifest.model_dump_json(indent=2))


def build_manifest(folder: Path, files: list[str], model_file: str, **fields: Any) -> Manifest:
    """Hash ``files`` in ``folder`` and build (without writing) their manifest."""
    hashes = hash_files(Path(folder), files)
    if "init_sha256" not in fields:  # what the student started from, as its training recorded
        model = (fields.get("config") or {}).get("training", {}).get("model", {})
        fields["init_sha256"] = model.get("init_sha256") if isinstance(model, dict) else None
    return Manifest(files=hashes, sha256=artifact_hash(hashes), model_file=model_file, **fields)


def read_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{folder} is not an artifact folder: {MANIFEST_NAME} is missing")
    if not regular_file(path):
        raise ArtifactError(f"{path} is a symlink or not a regular file: refused")
    try:
        data = json.loads(path.read_text())
        return Manifest.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ArtifactError(f"{path} is not a valid onedge manifest: {why(exc)}") from None


def verify_artifact(folder: Path, also: tuple[str, ...] = ()) -> Manifest:
    """Read the manifest and check the folder against it; the manifest if all holds.

    Refused: a folder that is a symlink, a listed file that is missing, a symlink or not a
    regular file, any entry the manifest does not list (except the names in ``also``, files a
    registry adds beside the artifact), a sha256 that differs, an artifact hash that differs.
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise ArtifactError(f"artifact {folder} is a symlink or not a folder: refused")
    manifest = read_manifest(folder)
    allowed = {MANIFEST_NAME, *manifest.files, *also}
    unlisted = sorted(entry.name for entry in folder.iterdir() if entry.name not in allowed)
    if unlisted:
        raise ArtifactError(
            f"artifact {folder} holds {', '.join(unlisted[:3])}"
            f"{' ...' if len(unlisted) > 3 else ''}, which its manifest does not list: "
            "remove it or export again"
        )
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.exists() and not path.is_symlink():
            raise ArtifactError(f"artifact {folder}: file {name} listed in the manifest is missing")
        if not regular_file(path):
            raise ArtifactError(f"artifact {folder}: {name} is a symlink or not a regular file")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"artifact {folder}: sha256 of {name} is {actual[:12]}..., the manifest says "
                f"{expected[:12]}...; the artifact was modified or corrupted, export it again"
            )
    if artifact_hash(manifest.files) != manifest.sha256:
        raise ArtifactError(f"artifact {folder}: manifest hash does not match its file list")
    if manifest.model_file not in manifest.files:
        raise ArtifactError(f"artifact {folder}: model file {manifest.model_file} is not hashed")
    return manifest


def artifact_paths(folder: Path, manifest: Manifest) -> list[Path]:
    """The files of a verified artifact, manifest first: all that is copied or uploaded."""
    return [Path(folder) / name for name in [MANIFEST_NAME, *sorted(manifest.files)]]


class ExportEntry(BaseModel):
    """One artifact as ``export.json`` lists it (the rest of its record is not read here)."""

    model_config = ConfigDict(extra="ignore")

    folder: str
    sha256: str

    @field_validator("folder")
    @classmethod
    def _plain_folder(cls, name: str) -> str:
        return plain_name(name, "artifact folder")


class StudentEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    torch_fp32: ExportEntry | None = None


class ExportIndex(BaseModel):
    """What ``export.json`` says was exported: the artifact folders and their hashes."""

    model_config = ConfigDict(extra="ignore")

    artifacts: list[ExportEntry]
    torch_fp32: ExportEntry | None = None  # the deployed (lead) student's PyTorch folder
    students: list[StudentEntry] = Field(default_factory=list)  # a family: one per student

    def entries(self) -> list[ExportEntry]:
        """Every listed folder once: the PyTorch students first, then the artifacts."""
        torch = [self.torch_fp32, *(s.torch_fp32 for s in self.students)]
        found: dict[str, ExportEntry] = {}
        for entry in [*(e for e in torch if e is not None), *self.artifacts]:
            found.setdefault(entry.folder, entry)
        return list(found.values())


def read_export_index(export_dir: Path) -> ExportIndex:
    """``export.json`` of an export folder, parsed; refused when missing or malformed."""
    export_dir = Path(export_dir)
    index_path = export_dir / EXPORT_JSON
    if not export_dir.is_dir():
        raise ArtifactError(f"export folder {export_dir} does not exist: run the export first")
    if not regular_file(index_path):
        raise ArtifactError(f"export {export_dir} is incomplete: {EXPORT_JSON} is missing; {AGAIN}")
    try:
        return ExportIndex.model_validate_json(index_path.read_bytes())
    except ValidationError as exc:
        raise ArtifactError(f"{index_path} is not a valid export index: {why(exc)}") from None


def read_export(export_dir: Path) -> dict[str, Manifest]:
    """Every artifact ``export.json`` lists, verified, keyed by folder name (listed order).

    An export killed half-way is refused with what is missing: ``export.json``, a listed
    folder or its manifest (the eval set is checked where it is read: it may come from
    elsewhere). A folder whose hash differs from the one the export recorded is refused.
    Folders ``export.json`` does not list are not read.
    """
    export_dir = Path(export_dir)
    index = read_export_index(export_dir)
    if not index.artifacts:
        raise ArtifactError(f"export {export_dir} lists no artifacts in {EXPORT_JSON}; {AGAIN}")
    entries = index.entries()
    found: dict[str, Manifest] = {}
    for entry in entries:
        folder = export_dir / entry.folder
        if not (folder / MANIFEST_NAME).exists():
            raise ArtifactError(
                f"export {export_dir} is incomplete: {entry.folder}/{MANIFEST_NAME} is missing; "
                f"{AGAIN}"
            )
        manifest = verify_artifact(folder)
        if manifest.sha256 != entry.sha256:
            raise ArtifactError(
                f"artifact {folder} (sha256 {manifest.sha256[:12]}...) is not the one the export "
                f"recorded ({entry.sha256[:12]}...): export again"
            )
        found[entry.folder] = manifest
    return found
