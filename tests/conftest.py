"""Shared fixtures: a real, briefly trained digits ONE checkpoint used across the packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def pytest_configure(config):
    # the tests' models are tiny: one intra-op thread is faster, and immune to oversubscription
    # when a test runs a runner or a server process beside pytest
    import torch

    torch.set_num_threads(1)


ROOT = Path(__file__).resolve().parents[1]


def quick_config(**overrides):
    """A small digits ONE config that trains in seconds on 2 CPU cores."""
    from pipeline.config import load_config

    sets = [
        "train.epochs=6",
        "train.progress=false",
        "method.rampup_epochs=3",
        "data.calibration_size=256",
    ]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(ROOT / "configs" / "digits-one.yaml", sets)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """Folder of a trained digits ONE run (checkpoint.pt, metrics.json, ...)."""
    from training.trainer import train

    out = tmp_path_factory.mktemp("digits-run")
    train(quick_config().training_config(), out)
    return out


@pytest.fixture(scope="session")
def digits_checkpoint(digits_run: Path) -> Path:
    return digits_run / "checkpoint.pt"


@pytest.fixture(scope="session")
def digits_students_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained student-ensemble family on digits: widths 1.0, 0.5 and 0.25."""
    from training.trainer import train

    out = tmp_path_factory.mktemp("digits-students")
    overrides = {
        "method.name": "student-ensemble",
        "method.widths": "[1.0, 0.5, 0.25]",
        "model.width": 0.5,
        "train.epochs": 3,
    }
    return train(quick_config(**overrides).training_config(), out).checkpoint
