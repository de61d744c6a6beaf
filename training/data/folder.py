"""Image folders: ``data.root/{train,val[,test]}/<class>/<image>``, any size, mode and format.

``val/`` is the validation split and, when ``test/`` is absent, the test split too (as before).
Calibration is drawn from train/ (stratified, ``data.calibration_size``). Each split is decoded
once into the cache (:mod:`training.data.cache`); val, test and calibration are stored as the
eval transform makes them (:func:`training.image_transform.eval_array`: shorter side to
``image_size / crop_pct``, centre crop). Training images are stored as squares a margin above
that (:func:`training.data.cache.margin_side`), and each batch takes a random resized crop
(``data.scale``, ``data.ratio``) and a horizontal flip from them. Small images (at most 32 px,
the 28-px-class sets) are stored as they are at ``image_size`` and keep the pad-and-crop
augmentation (``crop4+flip``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.config import DataConfig
from training.data.cache import DecodedSplit, DecodePolicy, decode_split, margin_side
from training.data.core import (
    DATASETS,
    RANDOM_RESIZED_CROP,
    DatasetSpec,
    DataSplits,
    TensorImages,
    split_indices,
)
from training.errors import DataError
from training.image_check import DataCheck, FolderLayout, enforce, scan_layout, summarise
from training.image_transform import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, is_small_image

_TEMPORARY_CACHES: dict[str, Path] = {}


def folder_transform(cfg: DataConfig) -> EvalTransform:
    """The eval transform ``data`` settings describe (``image_size`` required)."""
    if cfg.image_size is None:
        raise DataError("imagefolder needs data.image_size: the model's input side, e.g. 64")
    size = (cfg.image_size,) * 2 if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
    if size[0] != size[1]:
        raise DataError(
            f"data.image_size {list(size)} is not square: the models and exporters take square "
            "inputs; give one side (the eval transform crops the centre square)"
        )
    grey = cfg.channels == 1
    mean = (sum(IMAGENET_MEAN) / 3,) if grey else IMAGENET_MEAN
    std = (sum(IMAGENET_STD) / 3,) if grey else IMAGENET_STD
    return EvalTransform(
        size=size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
        antialias=cfg.antialias, channels=cfg.channels, mean=mean, std=std,
        small_image=is_small_image(size),
    )  # fmt: skip


def cache_folder(cfg: DataConfig) -> Path:
    """``data.cache_dir``, or one temporary folder per data root for this process."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir).expanduser()
    key = str(Path(cfg.root or ".").expanduser().resolve())
    if key not in _TEMPORARY_CACHES:
        folder = Path(tempfile.mkdtemp(prefix="onedge-image-cache-"))
        atexit.register(shutil.rmtree, folder, True)
        _TEMPORARY_CACHES[key] = folder
    return _TEMPORARY_CACHES[key]


@dataclass
class PreparedFolder:
    """A scanned, decoded image folder and its check."""

    layout: FolderLayout
    transform: EvalTransform
    decoded: dict[str, DecodedSplit]  # train (its policy), val, test (when test/ exists)
    check: DataCheck
    margin: bool  # train stored at a margin (random resized crops) rather than eval-sized


def prepare_folder(cfg: DataConfig) -> PreparedFolder:
    """Scan ``data.root``, decode every split into the cache and summarise what was found."""
    layout = scan_layout(Path(cfg.root).expanduser() if cfg.root else None)
    transform = folder_transform(cfg)
    margin = cfg.augment and not transform.small_image
    policies = {
        "train": DecodePolicy(transform, margin_side(transform) if margin else None),
        "val": DecodePolicy(transform),
        "test": DecodePolicy(transform),
    }
    cache, workers = cache_folder(cfg), cfg.decode_workers
    decoded = {
        split: decode_split(
            split, layout.root, [p for p, _ in files], policies[split], cache, workers
        )  # fmt: skip
        for split, files in layout.files.items()
    }
    records = {split: d.records for split, d in decoded.items()}
    return PreparedFolder(layout, transform, decoded, summarise(layout, records, cfg), margin)


def check_folder(cfg: DataConfig) -> DataCheck:
    """The check of ``onedge data check``: raises on what :func:`enforce` refuses."""
    prepared = prepare_folder(cfg)
    enforce(prepared.check, cfg)
    return prepared.check


class MarginImages(TensorImages):
    """Training images stored as squares above the model's size; batches come out at ``size``.

    :meth:`augmented_batch` takes a random resized crop per image (area ``scale``, aspect
    ``ratio``, torchvision's sampling rule with 10 tries, else the whole square) and flips half
    of them; :meth:`get_batch` gives the centre view (the part the eval crop keeps). Crops are
    resized bilinearly with antialiasing (torchvision's ``resized_crop`` on tensors) on the
    device the batch is on, then normalised.
    """

    def __init__(self, images: Tensor, labels: Tensor, spec: DatasetSpec, source: str,
                 indices: np.ndarray, scale: tuple[float, float], ratio: tuple[float, float]) -> None:  # fmt: skip
        super().__init__(images, labels, spec, source, indices)
        self.scale, self.ratio = scale, ratio
        transform = spec.transform()
        self.centre_fraction = transform.size[0] / int(transform.size[0] / transform.crop_pct)

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        x, y = self.get_batch(torch.tensor([position]))
        return x[0], y[0]

    def get_batch(
        self, positions: Tensor, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        raw, y = self._raw(positions, device)
        side = raw.shape[-1]
        crop = side * self.centre_fraction
        start = (side - crop) / 2
        boxes = torch.tensor([[start, start, start + crop, start + crop]]).repeat(len(raw), 1)
        return self._crop(raw, boxes), y

    def augmented_batch(
        self, positions: Tensor, generator: torch.Generator, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        raw, y = self._raw(positions, device)
        boxes = random_boxes(len(raw), raw.shape[-1], self.scale, self.ratio, generator)
        flip = (torch.rand(len(raw), generator=generator) < 0.5).to(raw.device)
        out = self._crop(raw, boxes)
        out[flip] = out[flip].flip(-1)
        return out, y

    def _raw(self, positions: Tensor, device: torch.device | None) -> tuple[Tensor, Tensor]:
        """The stored uint8 images and labels at ``positions`` (on ``device`` when given)."""
        if device is None or device.type == "cpu":
            rows = self._index[positions]
            return self.images[rows], self.labels[rows]
        images, labels, index, _, _ = self.on(device)
        rows = index[positions.to(device, non_blocking=True)]
        return images[rows], labels[rows]

    def _crop(self, raw: Tensor, boxes: Tensor) -> Tensor:
        """Each image's integer box resized to the model's size (bilinear, antialiased, as
        torchvision's ``resized_crop`` on tensors), then normalised."""
        size = (self.spec.image_size,) * 2
        out = torch.empty((len(raw), raw.shape[1], *size), device=raw.device)
        for k, (left, top, right, bottom) in enumerate(boxes.round().long().tolist()):
            crop = raw[k : k + 1, :, top:bottom, left:right].float()
            out[k] = F.interpolate(crop, size, mode="bilinear", antialias=True)[0]
        offset, divisor = self._offset.to(raw.device), self._divisor.to(raw.device)
        return (out - offset) / divisor


def random_boxes(count: int, side: int, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator) -> Tensor:  # fmt: skip
    """(count, 4) crop boxes x1, y1, x2, y2 in a ``side`` square: torchvision's RandomResizedCrop
    rule (area in ``scale``, log-uniform aspect in ``ratio``, 10 tries, else the whole square)."""
    tries = 10
    area = side * side * torch.empty(count, tries).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(count, tries).uniform_(*np.log(ratio).tolist(), generator=generator)
    aspect = torch.exp(log_ratio)
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (h > 0) & (w <= side) & (h <= side)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((count,), -1))
    pick = first.clamp(min=0)[:, None]
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], torch.full((count,), float(side)))
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], torch.full((count,), float(side)))
    top = (torch.rand(count, generator=generator) * (side - h + 1)).floor()
    left = (torch.rand(count, generator=generator) * (side - w + 1)).floor()
    return torch.stack([left, top, left + w, top + h], 1)


def _pool(decoded: DecodedSplit, layout: FolderLayout, split: str) -> tuple[Tensor, Tensor]:
    labels = torch.tensor([label for _, label in layout.files[split]], dtype=torch.int64)
    return torch.from_numpy(decoded.images), labels


@DATASETS.register("imagefolder")
def imagefolder(cfg: DataConfig, seed: int) -> DataSplits:
    """data.root/{train,val[,test]}/<class>/<image> of any size and format; data.image_size."""
    prepared = prepare_folder(cfg)
    enforce(prepared.check, cfg)
    layout, transform = prepared.layout, prepared.transform
    augmentation = "crop4+flip" if transform.small_image else RANDOM_RESIZED_CROP
    spec = DatasetSpec(
        "imagefolder", len(layout.classes), layout.classes, transform.channels,
        transform.size[0], transform.mean, transform.std, 255.0, augmentation,
        eval_transform=transform.model_dump(mode="json"),
    )  # fmt: skip
    train = prepared.decoded["train"]
    good = train.good_rows()
    images, labels = _pool(train, layout, "train")
    no_val = cfg.model_copy(update={"val_fraction": 0.0})  # val is a folder of its own
    idx = {k: good[v] for k, v in split_indices(labels[good].numpy(), no_val, seed, carve_test=False).items()}  # fmt: skip
    if prepared.margin:
        train_view = MarginImages(images, labels, spec, "train", idx["train"], cfg.scale, cfg.ratio)
        files = [layout.files["train"][i][0] for i in idx["calibration"]]
        cal = decode_split("calibration", layout.root, files, DecodePolicy(transform),
                           cache_folder(cfg), cfg.decode_workers)  # fmt: skip
        cal_pool = (torch.from_numpy(cal.images), labels[idx["calibration"]])
        calibration = TensorImages(*cal_pool, spec, "calibration", np.arange(len(files)))
    else:
        train_view = TensorImages(images, labels, spec, "train", idx["train"])
        calibration = TensorImages(images, labels, spec, "train", idx["calibration"])
    views = {}
    for split in ("val", "test" if layout.has_test else "val"):
        pool = _pool(prepared.decoded[split], layout, split)
        views[split] = TensorImages(*pool, spec, split, prepared.decoded[split].good_rows())
    skipped = tuple((b["file"], b["reason"]) for b in prepared.check.bad_files)
    return DataSplits(spec, train_view, views["val"], calibration, views["test" if layout.has_test else "val"], skipped)  # fmt: skip
