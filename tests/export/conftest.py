"""Fixtures of the export tests: a small plain CNN exported to ONNX, and images for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export.onnx import torch_to_onnx

CHW = (1, 12, 12)


def small_cnn(seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU x2, pooling, linear: the shapes a CIFAR-style student has, in miniature."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(16, 10),
    )
    with torch.no_grad():  # non-trivial running statistics, as after training
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((96, *CHW)).astype(np.float32)


@pytest.fixture(scope="session")
def cnn() -> nn.Module:
    return small_cnn()


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory, cnn: nn.Module, images: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("cnn") / "model.onnx"
    metadata = {"onedge.class_names": '["a"]', "onedge.source_checkpoint_sha256": "0" * 64}
    return torch_to_onnx(cnn, path, torch.from_numpy(images[:1]), opset=18, metadata=metadata)
