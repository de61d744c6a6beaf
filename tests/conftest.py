"""Shared fixtures: a real, briefly trained digits ONE checkpoint used across the packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]

# Prefect's home (~/.prefect) for the session, in a temporary folder. Set when this file is
# imported, before any test module imports Prefect: Prefect reads its settings at import.
# MLflow's default store (./mlflow.db) lands in the session's temporary working directory
# (outside_the_repo); MLFLOW_TRACKING_URI stays unset, since `onedge promote` reads it before
# --run DIR and the tests of that command say which registry they mean.
STORES = Path(tempfile.mkdtemp(prefix="onedge-tests-"))
os.environ["PREFECT_HOME"] = str(STORES / "prefect-home")


def repo_litter() -> set[str]:
    """New-file entries of ``git status`` that a run would leave: anything at the top level
    (the folder a process started in writes there) and stores or run output anywhere."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    entries = set()
    for line in done.stdout.splitlines():
        status, path = line[:2], line[3:]
        if status not in ("??", "!!") or "__pycache__" in path:
            continue
        top_level = "/" not in path.rstrip("/")
        if top_level or path.endswith((".db", "mlruns/", "mlartifacts/", ".cache/")):
            entries.add(path)
    return entries


LITTER_BEFORE = repo_litter() if (ROOT / ".git").exists() else set()


@pytest.fixture(scope="session", autouse=True)
def outside_the_repo(tmp_path_factory):
    """Every test runs in a temporary working directory (where MLflow's default store goes),
    with Prefect's home in a temporary folder (set above), so nothing a test starts can write
    into the repository."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield
    shutil.rmtree(STORES, ignore_errors=True)


def pytest_configure(config):
    # the tests' models are tiny: one intra-op thread is faster, and immune to oversubscription
    # when a test runs a runner or a server process beside pytest
    import torch

    torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A photo-like image folder, written once: train/val/test/<4 classes>/, 20 images each,
    JPEG/PNG/WebP/BMP at 40-100 px and random aspects, L/RGB/RGBA/P, some EXIF-rotated JPEGs.
    Treat it as read-only (copy it to add files)."""
    from tests.image_folder import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("image-folder"))


@pytest.fixture(scope="session")
def bad_image_files(tmp_path_factory) -> dict[str, Path]:
    """A truncated JPEG, a 0-byte file and a text file named .jpg: {"truncated", "empty", "text"}."""
    from tests.image_folder import write_bad_images

    return write_bad_images(tmp_path_factory.mktemp("bad-images"))
