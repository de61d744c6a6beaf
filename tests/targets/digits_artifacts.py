"""Real artifacts for the targets tests: a small CNN trained on scikit-learn's digits.

Writes the layout an export writes: ``onnx-fp32/``, ``openvino-fp32/``, ``tensorrt-fp16/`` (the
ONNX a board builds its engine from), each with manifest.json, ``eval.npz`` holding the
held-out images (normalised NCHW float32), labels and the FP32 PyTorch reference logits, and
``export.json`` listing the artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from sklearn.datasets import load_digits
from torch import nn

from export.config import TensorRTOptions
from export.manifest import (
    EXPORT_JSON,
    MANIFEST_NAME,
    InputSpec,
    OutputSpec,
    build_manifest,
    read_manifest,
    write_manifest,
)
from export.tensorrt import build_settings

HELD_OUT = 400


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N, 1, 8, 8
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    mean, std = float(images[:-HELD_OUT].mean()), float(images[:-HELD_OUT].std())
    images = (images - mean) / std
    return images[:-HELD_OUT], labels[:-HELD_OUT], images[-HELD_OUT:], labels[-HELD_OUT:], mean, std


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int = 4) -> None:
    torch.manual_seed(0)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(128):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
    model.eval()


def write_artifact(
    folder: Path, files: list[str], model_file: str, fmt: str, mean: float, std: float
):
    manifest = build_manifest(
        folder,
        files,
        model_file,
        name=folder.name,
        format=fmt,
        precision="fp16" if fmt == "tensorrt" else "fp32",
        input=InputSpec(shape=[-1, 1, 8, 8], mean=[mean], std=[std], scale=16.0),
        output=OutputSpec(shape=[-1, 10]),
        class_names=[str(d) for d in range(10)],
        source_checkpoint_sha256="0" * 64,
        branch=0,
        extra={"build": build_settings("fp16", (1, 8, 8), TensorRTOptions())}
        if fmt == "tensorrt"
        else {},
    )
    write_manifest(folder, manifest)
    return manifest


def write_export_index(root: Path) -> Path:
    """``export.json`` listing every artifact folder under ``root`` with its hash."""
    entries = [
        {"folder": folder.name, "sha256": read_manifest(folder).sha256}
        for folder in sorted(root.iterdir())
        if (folder / MANIFEST_NAME).is_file()
    ]
    path = root / EXPORT_JSON
    path.write_text(json.dumps({"artifacts": entries}, indent=2))
    return path


def build_export(root: Path) -> Path:
    """Train, export and write the artifacts under ``root``; return ``root``."""
    torch.set_num_threads(1)  # small batches: threads only contend
    x_train, y_train, x_test, y_test, mean, std = digits_split()
    model = small_cnn()
    train(model, x_train, y_train)
    with torch.no_grad():
        reference = model(torch.from_numpy(x_test)).numpy()
    np.savez(root / "eval.npz", images=x_test, labels=y_test, reference_logits=reference)

    onnx_dir = root / "onnx-fp32"
    onnx_dir.mkdir(parents=True)
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 8, 8),
        onnx_dir / "model.onnx",
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    write_artifact(onnx_dir, ["model.onnx"], "model.onnx", "onnx", mean, std)

    ov_dir = root / "openvino-fp32"
    ov_dir.mkdir()
    ov.save_model(ov.convert_model(onnx_dir / "model.onnx"), ov_dir / "model.xml", False)
    write_artifact(ov_dir, ["model.xml", "model.bin"], "model.xml", "openvino", mean, std)

    trt_dir = root / "tensorrt-fp16"
    trt_dir.mkdir()
    (trt_dir / "model.onnx").write_bytes((onnx_dir / "model.onnx").read_bytes())
    write_artifact(trt_dir, ["model.onnx"], "model.onnx", "tensorrt", mean, std)
    write_export_index(root)
    return root
