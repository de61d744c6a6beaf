"""The PyTorch FP32 student of an export, timed at batch 1 on this CPU: the speed-up reference.

The student is rebuilt from the checkpoint (``weights_only`` loading) and the branch the export
recorded, never loaded from ``student.pt2``: ``torch.export.load`` unpickles, and nothing read
from a run folder is unpickled (docs/SECURITY.md). It is timed with the protocol the targets use
(:mod:`export.timing`) and scored on the export's eval set.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from export.errors import ExportError
from export.extract import extract_branch
from export.manifest import EVAL_FILE, Manifest, read_export, read_export_index, regular_file
from export.preprocess import InputContract, Preprocessed
from export.timing import time_calls, warm_up
from training.checkpoint import LoadedCheckpoint, load_checkpoint

CHUNK = 256  # images per forward pass when scoring the eval set


class TimingSettings(Protocol):
    """The measuring protocol's settings the baseline reads (a target's ValidationSettings)."""

    eval_limit: int | None
    threads: int | None
    warmup_seconds: float
    warmup_calls: int
    timed_seconds: float
    timed_calls: int


@dataclass(frozen=True)
class TorchTiming:
    """What timing the PyTorch FP32 student measured."""

    artifact: str  # the export's torch-fp32 folder of the deployed student
    sha256: str  # that artifact's sha256
    top1: float  # test top-1 on the eval set (fraction)
    samples: list[float]  # per-call seconds at batch 1
    threads: int


def time_torch_student(export_dir: Path, checkpoint: Path, settings: TimingSettings) -> TorchTiming:
    """Rebuild the export's deployed PyTorch student from ``checkpoint``, score it, time it."""
    export_dir = Path(export_dir)
    folder, manifest = _lead_manifest(export_dir)
    loaded = load_checkpoint(Path(checkpoint))
    if loaded.sha256 != manifest.source_checkpoint_sha256:
        raise ExportError(
            f"{checkpoint} (sha256 {loaded.sha256[:12]}...) is not the checkpoint the export was "
            f"made from ({manifest.source_checkpoint_sha256[:12]}...): export again"
        )
    images, labels = _eval_set(export_dir, manifest, settings.eval_limit)
    module = _student(loaded, manifest, images)
    previous = torch.get_num_threads()
    try:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        threads = torch.get_num_threads()
        with torch.inference_mode():
            predicted = _predict(module, images)
            samples = _time_batch1(module, images, settings)
    finally:
        torch.set_num_threads(previous)
    top1 = float((predicted == labels).mean())
    return TorchTiming(folder, manifest.sha256, top1, samples, threads)


def _lead_manifest(export_dir: Path) -> tuple[str, Manifest]:
    """The deployed student's torch-fp32 folder and its manifest, as export.json names it."""
    manifests = read_export(export_dir)
    lead = read_export_index(export_dir).torch_fp32  # the deployed student's folder
    if lead is None or lead.folder not in manifests:
        raise ExportError(f"{export_dir}/export.json names no torch_fp32 folder: export again")
    return lead.folder, manifests[lead.folder]


def _eval_set(
    export_dir: Path, manifest: Manifest, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` eval images (in the artifact's input dtype) and their labels."""
    if not regular_file(export_dir / EVAL_FILE):
        raise ExportError(f"{export_dir} has no {EVAL_FILE}: export again")
    with np.load(export_dir / EVAL_FILE, allow_pickle=False) as data:
        images = data["images"][:limit].astype(manifest.input.dtype)
        labels = data["labels"][:limit]  # raw images when embedded
    return images, labels


def _student(loaded: LoadedCheckpoint, manifest: Manifest, images: np.ndarray) -> nn.Module:
    """The student the artifact holds: the branch's network, behind the preprocessing if embedded."""
    contract = InputContract.for_spec(
        loaded.spec,
        manifest.input.preprocessing == "embedded",
        manifest.input.layout,
        manifest.input.dtype,
    )
    check = images[:CHUNK]
    normalised = contract.normalise(check) if contract.embedded else check
    module = extract_branch(loaded, manifest.branch, images=normalised).module
    if contract.embedded:  # the student.pt2 the export wrote is this: the body behind it
        module = Preprocessed(module, contract).eval()
    return module


def _predict(module: nn.Module, images: np.ndarray) -> np.ndarray:
    """Top-1 class of every image, in chunks."""
    return np.concatenate(
        [
            module(torch.from_numpy(np.ascontiguousarray(chunk))).argmax(1).numpy()
            for chunk in np.split(images, range(CHUNK, len(images), CHUNK))
        ]
    )


def _time_batch1(module: nn.Module, images: np.ndarray, settings: TimingSettings) -> list[float]:
    """Per-call seconds at batch 1 over the first 16 images in turn, after the warm-up."""
    inputs = itertools.cycle([torch.from_numpy(image[None]) for image in images[:16]])

    def call() -> object:
        return module(next(inputs))

    warm_up(call, settings.warmup_seconds, settings.warmup_calls)
    return time_calls(call, settings.timed_seconds, settings.timed_calls)
