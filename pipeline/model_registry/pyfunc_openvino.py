"""MLflow ``python_function`` loader for an onedge OpenVINO artifact (``loader_module``).

A registered OpenVINO version ships this file in its ``code/`` folder, so it imports only the
standard library, numpy and openvino. ``mlflow.pyfunc.load_model`` calls :func:`_load_pyfunc` with
the artifact folder (``data/<artifact>``: manifest.json, model.xml, model.bin); the files are
checked against the manifest's sha256 before OpenVINO reads them. ``predict`` takes raw images in
the manifest's input contract and returns ``class_index``, ``class_name`` and ``probabilities``.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

BATCH = 256


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32: exp(z - max z) / sum exp(z - max z)."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OpenVinoClassifier:
    """An onedge OpenVINO artifact as a classifier of raw images."""

    def __init__(self, folder: str) -> None:
        import openvino as ov

        with open(os.path.join(folder, "manifest.json")) as handle:
            self.manifest = json.load(handle)
        for name, expected in self.manifest["files"].items():
            if _sha256(os.path.join(folder, name)) != expected:
                raise ValueError(f"{name} in {folder} does not match its manifest's sha256")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.manifest["precision"] == "fp32":  # no silent BF16 on CPUs that have it
            config["INFERENCE_PRECISION_HINT"] = "f32"
        model = ov.Core().read_model(os.path.join(folder, self.manifest["model_file"]))
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.dtype = np.dtype(self.manifest["input"]["dtype"])
        self.shape = list(self.manifest["input"]["shape"][1:])
        fixed = self.manifest["input"]["shape"][0]  # -1: dynamic batch; 1: a latency artifact
        self.batch = BATCH if fixed == -1 else fixed
        self.class_names = np.array(self.manifest["class_names"])

    def logits(self, images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch):
            chunk = np.ascontiguousarray(images[start : start + self.batch], dtype=self.dtype)
            self.request.infer({0: chunk})
            out.append(self.request.get_output_tensor(0).data.astype(np.float32))
        return np.concatenate(out)

    def predict(self, data, params=None) -> dict:
        if isinstance(data, dict):
            data = data.get("input", next(iter(data.values())))
        images = np.asarray(data)
        if list(images.shape[1:]) != self.shape:
            raise ValueError(
                f"images are {list(images.shape[1:])} each; the model takes {self.shape}"
            )
        probabilities = softmax(self.logits(images))
        index = probabilities.argmax(axis=1).astype(np.int64)
        return {
            "class_index": index,
            "class_name": self.class_names[index],
            "probabilities": probabilities,
        }


def _load_pyfunc(path: str) -> OpenVinoClassifier:
    """Called by ``mlflow.pyfunc.load_model`` with the artifact folder."""
    return OpenVinoClassifier(path)
