"""A resumable, vectorised loader: batches of (x, y) as a pure function of (seed, epoch).

In-memory pools (:class:`training.data.core.TensorImages`, and the decoded image-folder
caches built on it) are batched by one indexing operation; any other data set goes through a
torch DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from training.data.core import AUGMENTATIONS, RANDOM_RESIZED_CROP, DatasetSpec, TensorImages
from training.errors import DataError


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
        known = [*AUGMENTATIONS, RANDOM_RESIZED_CROP]
        if self.augment not in known:
            raise DataError(f"unknown augmentation {self.augment!r}; known: {known}")
        if self.augment == RANDOM_RESIZED_CROP and not hasattr(self.dataset, "augmented_batch"):
            raise DataError(f"{RANDOM_RESIZED_CROP} needs a decoded image folder's training split")
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
        if self.augment == RANDOM_RESIZED_CROP:  # the data set crops its own stored images
            for i, positions in enumerate(batches):
                generator = _generator(1, self.seed, self.epoch, self.rank, i)
                yield self.dataset.augmented_batch(positions, generator, self.device)  # type: ignore[attr-defined]
            return
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


def _stored_at_size(dataset: TensorImages) -> bool:
    return tuple(dataset.images.shape[-2:]) == (dataset.spec.image_size,) * 2


def to_raw_numpy(dataset: Dataset, limit: int | None = None) -> np.ndarray:
    """The first ``limit`` images as the data set stores them, NCHW, in :func:`to_numpy`'s order.

    In-memory pools stored at the model's size (the built-in sets, an image folder's decoded
    eval splits) give their raw values (uint8); any other data set (a training split stored
    above the size) gives its normalised images mapped back to [0, spec.scale], as uint8 when
    the scale is 255.
    """
    spec = getattr(dataset, "spec", None)
    if isinstance(dataset, TensorImages) and _stored_at_size(dataset):
        n = len(dataset) if limit is None else min(limit, len(dataset))
        return dataset.images[dataset._index[:n]].numpy()
    if spec is None:
        raise DataError("raw images need a data set from load_data (one with a .spec)")
    images, _ = to_numpy(dataset, limit)
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
    raw = (images * std + mean) * np.float32(spec.scale)
    if spec.scale == 255.0:
        return np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    return raw.astype(np.float32)
