"""The built-in data sets: digits, Fashion-MNIST, CIFAR-10/100 and SVHN, held in memory.

Each loader turns a :class:`DataConfig` and a seed into :class:`DataSplits` (see
:mod:`training.data.core` for the split rules); image folders are :mod:`training.data.folder`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import DataConfig
from training.data.core import (
    DATASETS,
    DIGIT_NAMES,
    DOWNLOAD_HINT,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    NORMALISATION,
    DatasetSpec,
    DataSplits,
    tensor_splits,
)
from training.errors import DataError


@DATASETS.register("digits")
def digits(cfg: DataConfig, seed: int) -> DataSplits:
    """scikit-learn's embedded UCI digits: 1797 8x8 images, values 0..16, test carved here."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    spec = DatasetSpec("digits", 10, DIGIT_NAMES, 1, 8, *NORMALISATION["digits"], 16.0, "none")
    return tensor_splits(spec, (images, labels), None, cfg, seed)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed when named .gz), magic and size checked."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path} ({err}): replace the file") from err
    magic, header = bytes([0, 0, 0x08, ndim]), 4 + 4 * ndim
    if len(raw) < header or raw[:4] != magic:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes: magic {raw[:4].hex()}, "
            f"expected {magic.hex()}; replace the file"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    if len(raw) != header + math.prod(dims):
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {dims} = "
            f"{math.prod(dims)} bytes of data, it holds {len(raw) - header}; replace the file"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


@DATASETS.register("fashion-mnist")
def fashion_mnist(cfg: DataConfig, seed: int) -> DataSplits:
    """Fashion-MNIST from IDX .gz files in data.root (default: the Debian package's folder)."""
    root = Path(cfg.root).expanduser() if cfg.root else FASHION_MNIST_ROOT
    names = [f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    missing = [str(root / n) for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"fashion-mnist: missing {', '.join(missing)}; install the Debian package "
            f"dataset-fashion-mnist or point data.root at a folder holding {', '.join(names)}"
            " (onedge does not download this data set)"
        )
    pools = []
    for prefix in ("train", "t10k"):
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 3)
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28) or labels.max() > 9:
            raise DataError(
                f"fashion-mnist {prefix} files disagree: images {images.shape}, "
                f"{len(labels)} labels up to {labels.max()}; expected N x 28 x 28 and labels 0..9"
            )
        pools.append(
            (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
        )
    norm = NORMALISATION["fashion-mnist"]
    spec = DatasetSpec(
        "fashion-mnist", 10, FASHION_MNIST_CLASSES, 1, 28, *norm, 255.0, "crop2+flip"
    )
    return tensor_splits(spec, pools[0], pools[1], cfg, seed)


def _vision_root(cfg: DataConfig, expected: list[str]) -> Path:
    """data.root for a torchvision data set, checked to hold ``expected`` unless downloading."""
    if cfg.root is None:
        raise DataError(
            f"data set {cfg.name!r} needs data.root, a folder holding {', '.join(expected)}; {DOWNLOAD_HINT}"
        )
    root = Path(cfg.root).expanduser()
    missing = [str(root / f) for f in expected if not (root / f).is_file()]
    if missing and not cfg.download:
        raise DataError(f"data set {cfg.name!r}: missing {', '.join(missing)}; {DOWNLOAD_HINT}")
    return root


def _open_vision(cfg: DataConfig, factory: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return factory(download=cfg.download, **kwargs)
    except (RuntimeError, OSError) as err:
        raise DataError(
            f"data set {cfg.name!r} could not be loaded from {cfg.root}: {err}"
        ) from err


def _cifar(cfg: DataConfig, seed: int, factory: Any, name: str) -> DataSplits:
    folder = factory.base_folder
    files = [f for f, _ in factory.train_list + factory.test_list] + [factory.meta["filename"]]
    root = _vision_root(cfg, [f"{folder}/{f}" for f in files])
    pools = []
    for train in (True, False):
        data = _open_vision(cfg, factory, root=root, train=train)
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
        pools.append((images, torch.tensor(data.targets, dtype=torch.int64)))
    classes = tuple(data.classes)
    spec = DatasetSpec(
        name, len(classes), classes, 3, 32, *NORMALISATION[name], 255.0, "crop4+flip"
    )
    return tensor_splits(spec, pools[0], pools[1], cfg, seed)


@DATASETS.register("cifar10")
def cifar10(cfg: DataConfig, seed: int) -> DataSplits:
    """CIFAR-10 (torchvision files in data.root): 50k train, 10k test, 32x32 colour."""
    from torchvision.datasets import CIFAR10

    return _cifar(cfg, seed, CIFAR10, "cifar10")


@DATASETS.register("cifar100")
def cifar100(cfg: DataConfig, seed: int) -> DataSplits:
    """CIFAR-100 (torchvision files in data.root): 50k train, 10k test, 32x32 colour."""
    from torchvision.datasets import CIFAR100

    return _cifar(cfg, seed, CIFAR100, "cifar100")


@DATASETS.register("svhn")
def svhn(cfg: DataConfig, seed: int) -> DataSplits:
    """SVHN cropped digits: the train split (no augmentation) and the official test split."""
    from torchvision.datasets import SVHN

    root = _vision_root(cfg, [SVHN.split_list[s][1] for s in ("train", "test")])
    pools = []
    for split in ("train", "test"):
        data = _open_vision(cfg, SVHN, root=root, split=split)
        pools.append((torch.from_numpy(data.data), torch.from_numpy(data.labels.astype(np.int64))))
    spec = DatasetSpec("svhn", 10, DIGIT_NAMES, 3, 32, *NORMALISATION["svhn"], 255.0, "none")
    return tensor_splits(spec, pools[0], pools[1], cfg, seed)
