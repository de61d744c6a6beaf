"""The manifest every artifact folder carries (docs/DESIGN.md rule 7).

An artifact is a folder: the model files plus ``manifest.json``. The manifest records the
sha256 of every file and one artifact hash over all of them; what was validated is what gets
registered, so every consumer calls :func:`verify_artifact` before it trusts a folder.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.errors import OnedgeError, first_line
from training.files import atomic_write, sha256_file

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1

Format = Literal["torch", "onnx", "openvino", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]


class ArtifactError(OnedgeError):
    """An artifact folder is missing files, corrupt, or does not match its manifest."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "logits"
    shape: list[int]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    branch: int
    width: float | None = Field(None, description="the branch's width multiplier (families)")
    config: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    extra: dict[str, Any] = Field(default_factory=dict)


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
    return Manifest(files=hashes, sha256=artifact_hash(hashes), model_file=model_file, **fields)


def read_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{folder} is not an artifact folder: {MANIFEST_NAME} is missing")
    try:
        data = json.loads(path.read_text())
        return Manifest.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as exc:
        first = first_line(exc)
        raise ArtifactError(f"{path} is not a valid onedge manifest: {first}") from None


def verify_artifact(folder: Path) -> Manifest:
    """Read the manifest and check every file's sha256 and the artifact hash."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"artifact {folder}: file {name} listed in the manifest is missing")
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
