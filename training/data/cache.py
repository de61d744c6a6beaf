"""Decode once: a split of image files as one uint8 (N, C, H, W) array on disk, memory-mapped.

Each split is decoded and resized by worker processes into ``<cache_dir>/<split>-<key>.npy``
(NumPy's format, read with ``allow_pickle=False``) beside a JSON index holding, per file, the
sha256 of its bytes, its size and mode as decoded, and why it was unusable (a bad file's row
stays zeros). The key is the sha256 of the file list (relative names, byte sizes, mtimes),
the decode policy (the eval transform, or the training margin) and :data:`CODE_VERSION`: a
changed, added or removed file, another image size or policy, or new decoding code builds a new
cache, and the split's older caches are removed. Nothing in the image folder is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from onedge.files import atomic_write
from training.errors import BadImageError, DataError
from training.image_transform import (
    EvalTransform,
    center_crop,
    eval_array,
    open_image,
    resize,
    to_channels,
)

CODE_VERSION = 3  # bump when decoding, resizing or the index format changes
TRAIN_MARGIN = 1.15  # training images are stored this much above the eval resize
CHUNK = 32  # files per worker task


def margin_side(spec: EvalTransform) -> int:
    """Side of the stored training squares: ceil(max(size) / crop_pct * TRAIN_MARGIN)."""
    return math.ceil(max(spec.size) / spec.crop_pct * TRAIN_MARGIN)


@dataclass(frozen=True)
class DecodePolicy:
    """How a split is stored: the eval transform's output, or a training margin square.

    ``stored_side`` set: the shorter side resized to it (the transform's interpolation), then
    the centre square, so a random resized crop has pixels above ``size`` to choose from.
    """

    transform: EvalTransform
    stored_side: int | None = None

    def shape(self) -> tuple[int, int, int]:
        c = self.transform.channels
        if self.stored_side is None:
            return (c, *self.transform.size)
        return (c, self.stored_side, self.stored_side)

    def apply(self, image: Image.Image) -> np.ndarray:
        if self.stored_side is None:
            return eval_array(image, self.transform)
        image = to_channels(image, self.transform)
        side, (w, h) = self.stored_side, image.size
        scale = side / min(w, h)
        resized = resize(image, (max(side, round(h * scale)), max(side, round(w * scale))), self.transform)  # fmt: skip
        pixels = np.asarray(center_crop(resized, (side, side)), dtype=np.uint8)
        return np.ascontiguousarray((pixels[:, :, None] if pixels.ndim == 2 else pixels).transpose(2, 0, 1))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "transform": self.transform.model_dump(mode="json"),
            "stored_side": self.stored_side,
        }


@dataclass(frozen=True)
class FileRecord:
    """What decoding one file found: its bytes' sha256, decoded size and mode, or the problem."""

    name: str  # relative to the folder root, with forward slashes
    sha256: str
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    error: str | None = None


@dataclass
class DecodedSplit:
    """A decoded split: ``images[i]`` is ``records[i]``'s file (zeros where it was bad)."""

    images: np.ndarray
    records: list[FileRecord]
    cache_file: Path
    built: bool  # decoded by this call (False: read from the cache)

    def bad(self) -> list[tuple[str, str]]:
        return [(r.name, r.error) for r in self.records if r.error is not None]

    def good_rows(self) -> np.ndarray:
        return np.asarray([i for i, r in enumerate(self.records) if r.error is None], np.int64)


def cache_key(root: Path, files: Sequence[Path], policy: DecodePolicy) -> str:
    """sha256 of the file list (names, sizes, mtimes), the policy and the code version."""
    listing = []
    for path in files:
        stat = path.stat()
        listing.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    text = json.dumps({"version": CODE_VERSION, "policy": policy.to_json(), "files": listing})
    return hashlib.sha256(text.encode()).hexdigest()


def _decode_one(
    path: Path, name: str, policy: DecodePolicy
) -> tuple[FileRecord, np.ndarray | None]:
    try:
        data = path.read_bytes()
    except OSError as err:
        return FileRecord(name, "", error=f"cannot be read ({err.strerror or err})"), None
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = open_image(data if data else path, name)
        record = FileRecord(name, digest, image.width, image.height, image.mode, image.format or "")
        return record, policy.apply(image)
    except BadImageError as err:
        return FileRecord(name, digest, error=err.reason), None


def _decode_chunk(
    array_path: str, start: int, paths: list[str], names: list[str], policy: DecodePolicy
) -> list[FileRecord]:
    """Worker: decode ``paths`` into rows ``start...`` of the .npy file at ``array_path``."""
    images = np.load(array_path, mmap_mode="r+", allow_pickle=False)
    records = []
    for offset, (path, name) in enumerate(zip(paths, names, strict=True)):
        record, pixels = _decode_one(Path(path), name, policy)
        if pixels is not None:
            images[start + offset] = pixels
        records.append(record)
    images.flush()
    return records


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _decode_all(
    array_path: Path, jobs: list[tuple], workers: int, progress: Any
) -> list[FileRecord]:
    if workers <= 1 or len(jobs) <= 1:
        done = []
        for job in jobs:
            done.append(_decode_chunk(str(array_path), *job))
            progress.update(len(job[1]))
        return [r for chunk in done for r in chunk]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    mine = set(range(workers, len(jobs), workers + 1))  # this process decodes a share too
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {
            i: pool.submit(_decode_chunk, str(array_path), *job)
            for i, job in enumerate(jobs)
            if i not in mine
        }
        done = []
        for i, job in enumerate(jobs):
            done.append(_decode_chunk(str(array_path), *job) if i in mine else futures[i].result())
            progress.update(len(done[-1]))
    return [r for chunk in done for r in chunk]


def _read_cached(
    index: Path, array: Path, key: str, count: int, shape: tuple
) -> DecodedSplit | None:
    try:
        meta = json.loads(index.read_text())
        if meta.get("key") != key or meta.get("version") != CODE_VERSION:
            return None
        images = np.load(array, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    records = [FileRecord(**r) for r in meta.get("records", [])]
    if images.shape != (count, *shape) or images.dtype != np.uint8 or len(records) != count:
        return None
    return DecodedSplit(images, records, array, built=False)


def decode_split(
    split: str,
    root: Path,
    files: Sequence[Path],
    policy: DecodePolicy,
    cache_dir: Path,
    workers: int | None = None,
) -> DecodedSplit:
    """The split's decoded images: read from ``cache_dir`` when its key matches, else built."""
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    key = cache_key(root, files, policy)
    array, index = cache_dir / f"{split}-{key[:24]}.npy", cache_dir / f"{split}-{key[:24]}.json"
    shape = policy.shape()
    cached = _read_cached(index, array, key, len(files), shape)
    if cached is not None:
        return cached
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f".{array.name}.{os.getpid()}.partial"
        np.lib.format.open_memmap(partial, "w+", np.uint8, (len(files), *shape)).flush()
    except OSError as err:
        raise DataError(f"cannot write the image cache in {cache_dir}: {err}") from err
    names = [p.relative_to(root).as_posix() for p in files]
    jobs = [
        ([str(p) for p in files[i : i + CHUNK]], names[i : i + CHUNK], policy)
        for i in range(0, len(files), CHUNK)
    ]
    jobs = [(i * CHUNK, *job) for i, job in enumerate(jobs)]
    with tqdm(total=len(files), desc=f"decoding {split}", unit="img", disable=None) as bar:
        records = _decode_all(partial, jobs, workers or default_workers(), bar)
    os.replace(partial, array)
    meta = {"key": key, "version": CODE_VERSION, "split": split, "shape": [len(files), *shape],
            "policy": policy.to_json(), "records": [r.__dict__ for r in records]}  # fmt: skip
    atomic_write(index, json.dumps(meta))
    for old in cache_dir.glob(f"{split}-*"):  # the split's earlier caches
        if old.name not in (array.name, index.name):
            old.unlink(missing_ok=True)
    return DecodedSplit(np.load(array, mmap_mode="c", allow_pickle=False), records, array, True)
