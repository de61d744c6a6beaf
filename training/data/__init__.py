"""Data sets, splits and the loader.

:mod:`training.data.core` holds the registry, the data set spec and the split rules;
:mod:`training.data.loader` the batch loader; :mod:`training.data.builtin` the in-memory data
sets and :mod:`training.data.folder` image folders (checked by :mod:`training.image_check`,
decoded once into :mod:`training.data.cache`). Importing this package registers them all.
"""

from __future__ import annotations

from training.data import builtin, folder  # noqa: F401  (the data sets register themselves)
from training.data.builtin import read_idx
from training.data.core import (
    AUGMENTATIONS,
    DATASETS,
    DIGIT_NAMES,
    DOWNLOAD_HINT,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    NORMALISATION,
    RANDOM_RESIZED_CROP,
    DatasetSpec,
    DataSplits,
    Pool,
    TensorImages,
    carve,
    load_data,
    split_indices,
    tensor_splits,
)
from training.data.loader import (
    Loader,
    augment_batch,
    make_loader,
    to_numpy,
    to_raw_numpy,
)

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DIGIT_NAMES",
    "DOWNLOAD_HINT",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "NORMALISATION",
    "RANDOM_RESIZED_CROP",
    "DataSplits",
    "DatasetSpec",
    "Loader",
    "Pool",
    "TensorImages",
    "augment_batch",
    "carve",
    "load_data",
    "make_loader",
    "read_idx",
    "split_indices",
    "tensor_splits",
    "to_numpy",
    "to_raw_numpy",
]
