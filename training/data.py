"""Data sets registry, deterministic splits and a resumable, vectorised loader.

Every entry of :data:`DATASETS` turns a :class:`DataConfig` and its ``split_seed`` into
:class:`DataSplits`.
Where a data set ships an official test split it is the test split; val is carved from the
training data (stratified), calibration is drawn from the (possibly limited) training portion,
never from val or test. Each split is a view: ``source`` names the pool of images it indexes
and ``indices`` the positions in that pool, so disjointness can be checked with index sets.
In-memory pools keep raw uint8 NCHW images once and normalise on access.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from onedge.registry import Registry
from training.config import DataConfig
from training.errors import DataError

DATASETS: Registry[Callable[[DataConfig, int], DataSplits]] = Registry("data set")
AUGMENTATIONS = {"none": 0, "crop2+flip": 2, "crop4+flip": 4}  # name -> crop padding in pixels
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
    augmentation: str  # a key of AUGMENTATIONS

    def __post_init__(self) -> None:
        problems = []
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            problems.append(f"mean/std need {self.in_channels} values, one per channel")
        if any(s <= 0 for s in self.std) or self.scale <= 0 or self.image_size <= 0:
            problems.append("std, scale and image_size must be positive")
        if self.augmentation not in AUGMENTATIONS:
            problems.append(
                f"augmentation {self.augmentation!r} is not one of {list(AUGMENTATIONS)}"
            )
        if problems:
            raise DataError(f"invalid data set spec {self.name!r}: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        expected = {f.name for f in fields(cls)}
        if set(data) != expected:
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


class FolderImages(Dataset):
    """A view into a torchvision ImageFolder whose images must be square ``spec.image_size``."""

    def __init__(self, folder: Any, spec: DatasetSpec, source: str, indices: np.ndarray) -> None:
        self.folder, self.spec, self.source = folder, spec, source
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        row = int(self.indices[position])
        x, y = self.folder[row]
        size = self.spec.image_size
        if tuple(x.shape) != (self.spec.in_channels, size, size):
            raise DataError(
                f"{self.folder.samples[row][0]} is {tuple(x.shape[1:])} pixels; every image "
                f"must be square {size}x{size} like the first one: resize the folder first"
            )
        return x, torch.tensor(y, dtype=torch.int64)


@dataclass
class DataSplits:
    """Four views of one data set. Test shares no image with train, val or calibration (an
    imagefolder without test/ is the one exception: its val folder doubles as test)."""

    spec: DatasetSpec
    train: Dataset
    val: Dataset
    calibration: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", "val", "calibration", "test")}


def load_data(cfg: DataConfig) -> DataSplits:
    """Load the data set ``cfg.name`` from :data:`DATASETS`, split by ``cfg.split_seed`` alone.

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


def _tensor_splits(
    spec: DatasetSpec, train: Pool, test: Pool | None, cfg: DataConfig, seed: int
) -> DataSplits:
    idx = split_indices(train[1].numpy(), cfg, seed, carve_test=test is None)
    source = "train" if test is not None else "all"
    views = {k: TensorImages(*train, spec, source, v) for k, v in idx.items()}
    if test is not None:
        views["test"] = TensorImages(*test, spec, "test", np.arange(len(test[1])))
    return DataSplits(spec, views["train"], views["val"], views["calibration"], views["test"])


# ----------------------------------------------------------------------------- loader


def _generator(*keys: int) -> torch.Generator:
    state = np.random.SeedSequence([k % (1 << 63) for k in keys]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def augment_batch(x: Tensor, padding: int, generator: torch.Generator, fill: Tensor) -> Tensor:
    """Per-sample random crop of ``x`` padded by ``padding`` (``fill`` per channel), random h-flip.

    The random draws come from ``generator`` on the CPU (a few numbers per image), so a batch
    augments the same on every device; the crop itself runs where ``x`` is (on the GPU when the
    data set is held there).
    """
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    flip = torch.rand(b, 1, generator=generator) < 0.5
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)
    cols = torch.where(flip, cols.flip(1), cols)  # reading columns backwards mirrors the crop
    rows, cols = (t.to(x.device, non_blocking=True) for t in (rows, cols))
    padded = (
        fill.to(x.device, x.dtype).view(1, c, 1, 1).repeat(b, 1, h + 2 * padding, w + 2 * padding)
    )
    padded[:, :, padding : padding + h, padding : padding + w] = x
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass(eq=False)
class Loader:
    """Batches of (x, y). Order and augmentation are a pure function of (seed, epoch).

    With ``world_size > 1`` the epoch's order is cut to a multiple of ``world_size`` and rank r
    takes every world_size-th item from r: disjoint shards of equal length (a shuffled epoch
    leaves out at most world_size - 1 samples, different ones each epoch). ``num_workers``
    matters only for data sets read from files; in-memory batches are one indexing operation.
    With ``device`` (a GPU) an in-memory data set is held there and batches are gathered,
    normalised and augmented there; the batches are the same as on the CPU.
    """

    dataset: Dataset
    batch_size: int
    shuffle: bool
    seed: int
    augment: str = "none"
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    epoch: int = 0
    device: torch.device | None = None

    def __post_init__(self) -> None:
        b, w, r, k = self.batch_size, self.world_size, self.rank, self.num_workers
        if b <= 0 or w <= 0 or not 0 <= r < w or k < 0:
            raise DataError(
                "loader needs batch_size > 0, world_size > 0, 0 <= rank < world_size and "
                f"num_workers >= 0; got {b}, {w}, {r}, {k}"
            )
        if self.augment not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {self.augment!r}; known: {list(AUGMENTATIONS)}")
        spec = getattr(self.dataset, "spec", None)
        if self.augment != "none" and not isinstance(spec, DatasetSpec):
            raise DataError("augmentation needs a data set from load_data (one with a .spec)")
        self._fill = -torch.tensor(spec.mean) / torch.tensor(spec.std) if spec else None
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        per_rank = len(self.dataset) // self.world_size  # type: ignore[arg-type]
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def batch_indices(self) -> list[Tensor]:
        """Dataset positions of this rank's batches in the current epoch."""
        size = len(self.dataset)  # type: ignore[arg-type]
        n = size - size % self.world_size
        if self.shuffle:
            order = torch.randperm(size, generator=_generator(0, self.seed, self.epoch))
        else:
            order = torch.arange(size)
        return list(order[self.rank : n : self.world_size].split(self.batch_size))[: len(self)]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        batches = self.batch_indices()
        if isinstance(self.dataset, TensorImages):
            fetched: Any = (self.dataset.get_batch(b, self.device) for b in batches)
        else:
            sampler = [b.tolist() for b in batches]
            fetched = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers)
        padding = AUGMENTATIONS[self.augment]
        for i, (x, y) in enumerate(fetched):
            if padding:
                generator = _generator(1, self.seed, self.epoch, self.rank, i)
                x = augment_batch(x, padding, generator, self._fill)
            yield x, y


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    augment: str = "none",
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    device: torch.device | None = None,
) -> Loader:
    """A :class:`Loader` over ``dataset`` (see there); ``augment`` is a key of AUGMENTATIONS."""
    return Loader(
        dataset, batch_size, shuffle, seed, augment, drop_last, rank, world_size, num_workers,
        device=device,
    )  # fmt: skip


def to_numpy(dataset: Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` (default all) normalised float32 NCHW images and int64 labels."""
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    n = len(dataset) if limit is None else min(limit, len(dataset))  # type: ignore[arg-type]
    spec = getattr(dataset, "spec", None)
    if n == 0 and spec is None:
        raise DataError("cannot tell the image shape of an empty data set without a .spec")
    if n == 0:
        shape = (0, spec.in_channels, spec.image_size, spec.image_size)
        return np.empty(shape, np.float32), np.empty(0, np.int64)
    xs, ys = [], []
    for x, y in Loader(dataset, 256, shuffle=False, seed=0):
        xs.append(x)
        ys.append(y)
        if sum(map(len, ys)) >= n:
            break
    return torch.cat(xs)[:n].numpy(), torch.cat(ys)[:n].to(torch.int64).numpy()


def to_raw_numpy(dataset: Dataset, limit: int | None = None) -> np.ndarray:
    """The first ``limit`` images as the data set stores them, NCHW, in :func:`to_numpy`'s order.

    In-memory pools give their raw values (uint8); a data set read from files (image folders)
    gives its normalised images mapped back to [0, spec.scale], as uint8 when the scale is 255.
    """
    if isinstance(dataset, TensorImages):
        n = len(dataset) if limit is None else min(limit, len(dataset))
        return dataset.images[dataset._index[:n]].numpy()
    spec = getattr(dataset, "spec", None)
    if spec is None:
        raise DataError("raw images need a data set from load_data (one with a .spec)")
    images, _ = to_numpy(dataset, limit)
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
    raw = (images * std + mean) * np.float32(spec.scale)
    if spec.scale == 255.0:
        return np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    return raw.astype(np.float32)


# ----------------------------------------------------------------------------- data sets


# the loaders register themselves into DATASETS
from training import datasets as _datasets  # noqa: E402, F401
