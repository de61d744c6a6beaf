"""``onedge predict``: the class of each image file, by an artifact folder or a registered version.

The model is an artifact folder (``DIR/export/onnx-int8``: checked against its manifest) or a
registered version, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: downloaded from MLflow
and its artifact's sha256 checked against the manifest and the version's ``onedge.sha256`` tag,
as the registry checks what it registers; a version whose files never matched what was
validated (no ``onedge.complete`` tag) is refused. Each image file (any size, any format PIL
reads) becomes the model's input by the eval transform its manifest records
(:mod:`training.image_transform`), and the artifact runs with the runner's own backends (ONNX
Runtime, OpenVINO): the same code as the MLflow pyfunc
(:class:`pipeline.model_registry.pyfunc_images.ImageClassifier`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import EXPORT_JSON, ArtifactError, read_export_index, verify_artifact
from onedge.errors import ConfigError
from onedge.strict import StrictModel
from pipeline.errors import PromotionError
from pipeline.model_registry.pyfunc_images import ImageClassifier
from targets.runner import RunnerError

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class Prediction(StrictModel):
    image: str
    class_index: int
    class_name: str
    probability: float


def artifact_folder(folder: Path) -> Path:
    """An artifact folder, checked against its manifest; an export folder is refused by name."""
    folder = Path(folder)
    if (folder / EXPORT_JSON).is_file():
        names = [e.folder for e in read_export_index(folder).artifacts]
        raise ArtifactError(
            f"{folder} is an export folder: give one of its artifacts, e.g. {folder / names[0]}"
            if names
            else f"{folder} is an export folder with no artifacts"
        )
    verify_artifact(folder)
    return folder


def parse_models_uri(text: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias, version)."""
    match = MODELS_URI.match(text)
    if match is None:
        raise ConfigError(f"{text!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"], match["version"]


def registered_version(client: Any, text: str) -> Any:
    """The model version ``text`` names, complete (its files were the validated ones)."""
    # inside: the registry side imports the run config and torch; predict on an artifact
    # folder needs none of it
    from pipeline.model_registry.register import TAG
    from pipeline.model_registry.tracking import guarded

    name, alias, version = parse_models_uri(text)
    with guarded(f"looking up {text}"):
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    tags = mv.tags or {}
    if tags.get(TAG + "complete") != "true" or not tags.get(TAG + "artifact"):
        raise PromotionError(
            f"{text} is version {mv.version} of {name}, whose files never matched what was "
            "validated (no onedge.complete tag): refused"
        )
    return mv


@contextmanager
def downloaded_artifact(client: Any, uri: str, text: str) -> Iterator[Path]:
    """The artifact folder of the version ``text`` names, downloaded and checked, while open."""
    import mlflow

    # inside: the registry side imports torch (see registered_version)
    from pipeline.model_registry.flavors import artifact_subpath
    from pipeline.model_registry.register import TAG
    from pipeline.model_registry.tracking import guarded

    mv = registered_version(client, text)
    with tempfile.TemporaryDirectory(prefix="onedge-predict-") as tmp:
        with guarded(f"downloading version {mv.version} of {mv.name}"):
            source = client.get_model_version_download_uri(mv.name, mv.version)
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=tmp, tracking_uri=uri, registry_uri=uri
            )
        folder = Path(path) / artifact_subpath(mv.tags[TAG + "artifact"])
        manifest = verify_artifact(folder, also=())
        if manifest.sha256 != mv.tags.get(TAG + "sha256"):
            raise ArtifactError(
                f"version {mv.version} of {mv.name} holds sha256 {manifest.sha256[:12]}..., "
                f"its tag says {str(mv.tags.get(TAG + 'sha256'))[:12]}...: refused"
            )
        yield folder


def classifier(folder: Path) -> Any:
    """The pyfunc's classifier on a checked artifact folder; a missing runtime is a typed error."""
    try:
        return ImageClassifier(folder)
    except RunnerError as exc:
        raise ArtifactError(f"cannot run {folder.name} here: {exc.message}") from None


def predict_files(folder: Path, images: list[Path]) -> list[Prediction]:
    """The class, its name and probability of each image file, by the artifact in ``folder``."""
    if not images:
        raise ConfigError("give at least one image file")
    model = classifier(folder)
    batch = np.stack([model.from_file(Path(path), str(path)) for path in images])
    out = model.predict(batch)
    return [
        Prediction(
            image=str(path),
            class_index=int(index),
            class_name=str(name),
            probability=float(probabilities[index]),
        )
        for path, index, name, probabilities in zip(
            images, out["class_index"], out["class_name"], out["probabilities"], strict=True
        )
    ]
