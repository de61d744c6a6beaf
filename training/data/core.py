"""Data sets registry, the data set spec, deterministic splits and in-memory image pools.

Every entry of :data:`DATASETS` turns a :class:`DataConfig` and its ``split_seed`` into
:class:`DataSplits`.
Where a data set ships an official test split it is the test split; val is carved from the
training data (stratified), calibration is drawn from the (possibly limited) training portion,
never from val or test. Each split is a view: ``source`` names the pool of images it indexes
and ``indices`` the positions in that pool, so disjointness can be checked with index sets.
In-memory pools keep raw uint8 NCHW images once and normalise on access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from onedge.registry import Registry
from training.config import DataConfig
from training.errors import DataError
from training.image_transform import EvalTransform

DATASETS: Registry[Callable[[DataConfig, int], DataSplits]] = Registry("data set")
AUGMENTATIONS = {"none": 0, "crop2+flip": 2, "crop4+flip": 4}  # name -> crop padding in pixels
RANDOM_RESIZED_CROP = "rrc+flip"  # image folders: random resized crop + flip, on cached images
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
DIGIT_NAMES = tuple(str(d) for d in range(10))
NORMALISATION = {  # (mean, std) per channel of images scaled to [0, 1]
    "digits": ((0.3053,), (0.3760,)),  # measured over all 1797 images / 16
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet statistics
}
Pool = tuple[Tensor, Tensor]  # raw uint8 NCHW images, int64 labels
DOWNLOAD_HINT = "set data.download=true to fetch them into data.root"


@dataclass(frozen=True)
class DatasetSpec:
    """What a model trained on a data set expects at its input, and what its outputs mean."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    image_size: int  # square side in pixels
    mean: tuple[float, ...]  # per channel, applied after dividing by ``scale``
    std: tuple[float, ...]
    scale: float  # raw pixel value / scale lies in [0, 1]
    augmentation: str  # a key of AUGMENTATIONS, or RANDOM_RESIZED_CROP
    eval_transform: Mapping[str, Any] | None = None  # an EvalTransform's fields; None: built in

    def __post_init__(self) -> None:
        problems = []
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            problems.append(f"mean/std need {self.in_channels} values, one per channel")
        if any(s <= 0 for s in self.std) or self.scale <= 0 or self.image_size <= 0:
            problems.append("std, scale and image_size must be positive")
        if self.augmentation not in (*AUGMENTATIONS, RANDOM_RESIZED_CROP):
            problems.append(
                f"augmentation {self.augmentation!r} is not one of {list(AUGMENTATIONS)}"
            )
        if problems:
            raise DataError(f"invalid data set spec {self.name!r}: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def transform(self) -> EvalTransform:
        """The eval transform that makes this data set's images from image files.

        Image folders record theirs; the built-in in-memory sets are small images used as
        they are, at ``image_size``, values 0..``scale``.
        """
        if self.eval_transform is not None:
            return EvalTransform.model_validate(dict(self.eval_transform))
        return EvalTransform(
            size=(self.image_size, self.image_size),
            channels=self.in_channels,
            mean=self.mean,
            std=self.std,
            value_range=(0, int(self.scale)),
            small_image=True,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        expected = {f.name for f in fields(cls)}
        optional = {"eval_transform"}  # absent from checkpoints written before it existed
        if not expected - optional <= set(data) <= expected:
            raise DataError(
                f"data set spec keys differ: unknown {sorted(set(data) - expected)}, "
                f"missing {sorted(expected - set(data))}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class TensorImages(Dataset):
    """A view (``indices``) into a pool of raw uint8 NCHW images and int64 labels in memory."""

    def __init__(
        self, images: Tensor, labels: Tensor, spec: DatasetSpec, source: str, indices: np.ndarray
    ) -> None:
        self.images, self.labels, self.spec, self.source = images, labels, spec, source
        self.indices = np.asarray(indices, dtype=np.int64)
        self._index = torch.from_numpy(self.indices)
        self._offset = torch.tensor(spec.mean).view(-1, 1, 1) * spec.scale
        self._divisor = torch.tensor(spec.std).view(-1, 1, 1) * spec.scale

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        row = self._index[position]
        return self.normalise(self.images[row]), self.labels[row]

    def get_batch(
        self, positions: Tensor, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        """Normalised float32 (B, C, H, W) images and int64 (B,) labels at ``positions``.

        With ``device`` the pool is held there (copied once, uint8) and the batch is gathered
        and normalised there: no host-to-device copy of images per step.
        """
        if device is None or device.type == "cpu":
            rows = self._index[positions]
            return self.normalise(self.images[rows]), self.labels[rows]
        images, labels, index, offset, divisor = self.on(device)
        rows = index[positions.to(device, non_blocking=True)]
        return (images[rows].float() - offset) / divisor, labels[rows]

    def on(self, device: torch.device) -> tuple[Tensor, ...]:
        """The pool, index and normalisation constants on ``device`` (copied on first use)."""
        key = str(device)
        if getattr(self, "_device_key", None) != key:
            self._device_copy = tuple(
                t.to(device) for t in (self.images, self.labels, self._index)
            ) + (self._offset.to(device), self._divisor.to(device))
            self._device_key = key
        return self._device_copy

    def normalise(self, raw: Tensor) -> Tensor:
        return (raw.float() - self._offset) / self._divisor


@dataclass
class DataSplits:
    """Four views of one data set. Test shares no image with train, val or calibration (an
    imagefolder without test/ is the one exception: its val folder doubles as test)."""

    spec: DatasetSpec
    train: Dataset
    val: Dataset
    calibration: Dataset
    test: Dataset
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) left out by data.on_bad_image=skip

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", "val", "calibration", "test")}


def load_data(cfg: DataConfig) -> DataSplits:
    """Load the data set ``cfg.name`` from :data:`DATASETS`, split by ``cfg.split_seed`` alone.

    An image folder is scanned, checked and decoded into its cache first (see
    :mod:`training.data.folder`); a bad file stops it here, before any training.

    The training ``seed`` (initialisation, shuffling, augmentation) never moves the splits, so
    runs that differ only in ``seed`` are scored on the same test images.
    """
    return DATASETS.get(cfg.name)(cfg, cfg.split_seed)


# ----------------------------------------------------------------------------- splits


def carve(
    labels: np.ndarray, pool: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split index array ``pool`` into (rest, held), ``count`` held, class proportions kept."""
    if count <= 0:
        return pool, pool[:0]
    pool_labels = labels[pool]
    classes, sizes = np.unique(pool_labels, return_counts=True)
    quota = sizes * (count / len(pool))
    take = np.floor(quota).astype(np.int64)
    largest_remainders = np.argsort(take - quota, kind="stable")
    take[largest_remainders[: count - int(take.sum())]] += 1
    held = np.concatenate(
        [rng.permutation(pool[pool_labels == c])[:k] for c, k in zip(classes, take, strict=True)]
    )
    held.sort()
    return np.setdiff1d(pool, held, assume_unique=True), held


def split_indices(
    labels: np.ndarray, cfg: DataConfig, seed: int, *, carve_test: bool
) -> dict[str, np.ndarray]:
    """Positions of each split in one pool of ``labels``; a pure function of (labels, cfg, seed)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(labels))
    out: dict[str, np.ndarray] = {}
    if carve_test:
        pool, out["test"] = carve(labels, pool, round(cfg.test_fraction * len(pool)), rng)
    train, out["val"] = carve(labels, pool, round(cfg.val_fraction * len(pool)), rng)
    if cfg.limit_train is not None and cfg.limit_train < len(train):
        _, train = carve(labels, train, cfg.limit_train, rng)
    out["train"] = train
    _, out["calibration"] = carve(labels, train, min(cfg.calibration_size, len(train)), rng)
    return out


def tensor_splits(
    spec: DatasetSpec, train: Pool, test: Pool | None, cfg: DataConfig, seed: int
) -> DataSplits:
    idx = split_indices(train[1].numpy(), cfg, seed, carve_test=test is None)
    source = "train" if test is not None else "all"
    views = {k: TensorImages(*train, spec, source, v) for k, v in idx.items()}
    if test is not None:
        views["test"] = TensorImages(*test, spec, "test", np.arange(len(test[1])))
    return DataSplits(spec, views["train"], views["val"], views["calibration"], views["test"])
