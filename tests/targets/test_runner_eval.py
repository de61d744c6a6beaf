"""The runner reads only the first --eval-limit images of the eval set (case 10)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from targets import runner

SHAPE = [-1, 1, 64, 64]


@pytest.fixture(scope="module")
def large_eval(tmp_path_factory) -> Path:
    """4000 images of 1x64x64 float32: 65 MB of images, as np.savez writes them."""
    path = tmp_path_factory.mktemp("eval") / "eval.npz"
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4000, 1, 64, 64), dtype=np.float32)
    labels = rng.integers(0, 10, 4000)
    np.savez(path, images=images, labels=labels, reference_logits=np.zeros((4000, 10), "f4"))
    return path


def test_eval_limit_reads_only_the_first_images(large_eval: Path) -> None:
    with np.load(large_eval) as data:
        expected_images, expected_labels = data["images"][:10], data["labels"][:10]
    tracemalloc.start()
    try:
        arrays = runner.load_eval(str(large_eval), 10, SHAPE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert arrays["images"].shape == (10, 1, 64, 64) and len(arrays["reference_logits"]) == 10
    assert np.array_equal(arrays["images"], expected_images)
    assert np.array_equal(arrays["labels"], expected_labels)
    assert peak < 2 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for 10 images of 65 MB"


def test_without_a_limit_every_image_is_read(large_eval: Path) -> None:
    arrays = runner.load_eval(str(large_eval), None, SHAPE)
    assert arrays["images"].shape[0] == 4000 and arrays["labels"].shape == (4000,)


def test_an_eval_set_holding_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, images=np.array([{"a": 1}], dtype=object), labels=np.zeros(1))
    with pytest.raises(runner.RunnerError, match="holds Python objects") as info:
        runner.load_eval(str(path), None, SHAPE)
    assert info.value.kind == "data"
