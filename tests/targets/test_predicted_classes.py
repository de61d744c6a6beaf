"""The class each eval image got, as the runner records it (the report's per-class section)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from targets import ValidationSettings, validate_artifacts
from targets.base import unpack_classes
from targets.runner import pack_classes


@pytest.mark.parametrize("top", [9, 999])
def test_classes_round_trip_in_one_or_two_bytes(top: int) -> None:
    classes = np.random.default_rng(0).integers(0, top + 1, size=777)
    classes[0] = top
    text = pack_classes(classes)
    assert text.startswith("u1:" if top < 256 else "u2:")
    assert np.array_equal(unpack_classes(text, 777), classes)


@pytest.mark.parametrize("text", ["u4:AAAA", "u1:not base64!", "u1:" + "QUJD"])
def test_malformed_classes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="per-image classes"):
        unpack_classes(text, 3)


def test_wrong_count_is_refused() -> None:
    with pytest.raises(ValueError, match="hold 4 values for 5 images"):
        unpack_classes(pack_classes([1, 2, 3, 4]), 5)


def test_local_cpu_records_the_class_of_every_image(
    export_dir: Path, tmp_path: Path, fast: ValidationSettings
) -> None:
    report = validate_artifacts(export_dir, "local-cpu", tmp_path / "v", fast)
    with np.load(export_dir / "eval.npz") as data:
        labels = data["labels"]
    for result in (r for r in report.results if r.verdict != "skipped"):
        predicted = result.predicted_classes()
        assert predicted is not None and len(predicted) == len(labels) == result.eval_size
        assert np.array_equal(predicted == labels, result.correct_flags())
        assert np.mean(predicted == labels) == pytest.approx(result.top1)
