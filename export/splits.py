"""The checkpoint's data splits as an export sees them: normalised for the body, raw for artifacts.

Calibration, validation and test images come from the split the checkpoint was trained with,
so calibration never touches the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from export.preprocess import InputContract
from training.data import to_numpy, to_raw_numpy
from training.errors import DataError


@dataclass
class SplitImages:
    """One split as the body sees it (normalised NCHW float32) and as the artifacts take it."""

    normalised: np.ndarray
    labels: np.ndarray
    inputs: np.ndarray  # raw images in the contract's layout, or ``normalised``


def split_images(
    splits: Any, name: str, contract: InputContract, limit: int | None = None
) -> SplitImages:
    """The split ``name`` (its first ``limit`` images) as the body and the artifacts take it."""
    dataset = getattr(splits, name, None)
    if dataset is None or len(dataset) == 0:
        raise DataError(
            f"the checkpoint's data set has no {name} split; export needs calibration, "
            "validation and test images (check data.calibration_size and the split fractions)"
        )
    images, labels = to_numpy(dataset, limit=limit)
    if not contract.embedded:
        return SplitImages(images, labels, images)
    raw = contract.arrange(to_raw_numpy(dataset, limit=limit))
    # the body sees exactly what the embedded preprocessing computes from the raw images
    return SplitImages(contract.normalise(raw), labels, raw)


def raw_dtype(splits: Any) -> str:
    """The dtype the data set stores its raw images in (what an embedded artifact takes)."""
    return to_raw_numpy(splits.test, limit=1).dtype.name
