"""MLflow ``python_function`` loader of every onedge artifact: image files or arrays in, classes out.

A registered version ships this file in its ``code/`` folder with the few modules it imports, the
repository's own files (see :func:`pipeline.model_registry.flavors.code_paths`): the runner
(``targets/runner.py``, which runs artifacts on every target) and the one eval transform
(``training/image_transform.py``). ``mlflow.pyfunc.load_model`` calls :func:`_load_pyfunc` with
the artifact folder (``data/<artifact>``); its files are checked against the manifest's sha256
before a runtime reads them (ONNX Runtime for ONNX graphs, OpenVINO for IR).

``predict`` takes any of:

- arrays at the model's input (N, *shape), as validation fed them (raw uint8 images);
- image files: ``bytes`` (a JPEG, PNG, WebP, BMP ...), ``pathlib.Path`` objects, or base64 text
  of the bytes (how a JSON request to ``mlflow models serve`` carries them);
- a list of those, a pandas column of them, or a dict with one of them under ``input`` or
  ``image``.

Image files go through the eval transform recorded in the manifest (``input.transform``), the
transform that made the eval set the artifact was validated on. It returns ``class_index``,
``class_name`` and ``probabilities``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from onedge.errors import OnedgeError
from targets import runner
from training.image_transform import EvalTransform, eval_array, load_image

BATCH = 64
RUNTIME = {"onnx": "onnxruntime", "tensorrt": "onnxruntime", "openvino": "openvino"}
FILE_TYPES = (bytes, bytearray, memoryview, str, Path)


class ImageInputError(OnedgeError, ValueError):
    """An input the model cannot take: wrong shape, no transform for image files, bad base64."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32: exp(z - max z) / sum exp(z - max z)."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ImageClassifier:
    """An onedge artifact folder as a classifier of images (files or arrays)."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        folder = str(folder)
        self.manifest = runner.check_artifact(folder, None)  # every file against its sha256
        fmt = self.manifest["format"]
        if fmt not in RUNTIME:
            raise ImageInputError(f"{fmt} artifacts do not run here (ONNX and OpenVINO ones do)")
        options = SimpleNamespace(threads=threads, streams=1, device="CPU")
        self.backend = runner.BACKENDS[RUNTIME[fmt]](folder, self.manifest, options)
        spec = self.manifest["input"]
        self.shape = tuple(spec["shape"][1:])
        self.layout = spec.get("layout", "NCHW")
        self.dtype = np.dtype(spec["dtype"])
        self.embedded = spec.get("preprocessing") == "embedded"
        given = spec.get("transform")
        self.transform = EvalTransform.model_validate(given) if given else None
        self.batch = self.backend.static_batch or BATCH
        self.class_names = np.array(self.manifest["class_names"])

    def from_file(self, source: bytes | Path, name: str | None = None) -> np.ndarray:
        """One image file (bytes or a path) as the model's input, by the recorded transform."""
        if self.transform is None or not self.embedded:
            raise ImageInputError(
                "this artifact records no eval transform (exported before onedge wrote one) "
                "or takes normalised tensors: feed arrays at its input"
            )
        image = eval_array(load_image(source, self.transform, name), self.transform)
        return image.transpose(1, 2, 0) if self.layout == "NHWC" else image

    def inputs(self, data: Any) -> np.ndarray:
        """Whatever ``predict`` was given, as one batch at the model's input."""
        data = _unwrap(data)
        if isinstance(data, np.ndarray) and data.dtype.kind in "biuf":
            return self.arrays(data)
        items = [data] if isinstance(data, FILE_TYPES) else list(data)
        if items and all(isinstance(item, np.ndarray) and item.dtype.kind in "biuf"
                         for item in items):  # fmt: skip
            return self.arrays(np.stack(items))
        batch = [self.from_file(_file_source(item, k), _label(item, k)) for k, item in
                 enumerate(items)]  # fmt: skip
        if not batch:
            raise ImageInputError("no image given")
        return np.stack(batch)

    def arrays(self, images: np.ndarray) -> np.ndarray:
        """Arrays at the model's input, checked and cast as the runner casts the eval set."""
        if images.ndim == len(self.shape):
            images = images[None]
        if tuple(images.shape[1:]) != self.shape:
            raise ImageInputError(
                f"images are {list(images.shape[1:])} each; the model takes {list(self.shape)} "
                "(or give image files)"
            )
        if self.dtype == np.uint8 and (images.min() < 0 or images.max() > 255):
            raise ImageInputError("uint8 images hold values 0-255")
        return np.ascontiguousarray(images, dtype=self.dtype)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate(runner.batch_logits(self.backend, images, self.batch))

    def predict(self, data: Any, params: dict | None = None) -> dict[str, np.ndarray]:
        probabilities = softmax(self.logits(self.inputs(data)))
        index = probabilities.argmax(axis=1).astype(np.int64)
        return {
            "class_index": index,
            "class_name": self.class_names[index],
            "probabilities": probabilities,
        }


def _unwrap(data: Any) -> Any:
    """The images out of a dict (``input`` or ``image``) or a one-column DataFrame."""
    if isinstance(data, dict):
        for key in ("input", "image", "images"):
            if key in data:
                return _unwrap(data[key])
        return _unwrap(next(iter(data.values())))
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas, without importing it
        return list(data.iloc[:, 0])
    return data


def _file_source(item: Any, position: int) -> bytes | Path:
    """bytes and paths as they are; text as base64 of the file's bytes (JSON's way)."""
    if isinstance(item, np.ndarray) and item.dtype.kind in "SUO" and item.ndim == 0:
        item = item.item()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, Path):
        return item
    if isinstance(item, str):
        try:
            return base64.b64decode(item.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ImageInputError(
                f"input {position} is text but not base64 of an image file (give bytes, a "
                "pathlib.Path or base64 text)"
            ) from None
    raise ImageInputError(f"input {position} is a {type(item).__name__}, not an image file")


def _label(item: Any, position: int) -> str:
    return str(item) if isinstance(item, Path) else f"input {position}"


def _load_pyfunc(path: str) -> ImageClassifier:
    """Called by ``mlflow.pyfunc.load_model`` with the artifact folder."""
    return ImageClassifier(path)
