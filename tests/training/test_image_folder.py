"""Image folders of mixed sizes, modes and formats: splits, the decode cache, the check."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import DataConfig
from training.data import RANDOM_RESIZED_CROP, load_data, make_loader, to_numpy, to_raw_numpy
from training.data.folder import check_folder, prepare_folder
from training.errors import BadImageError, DataError
from training.image_transform import eval_file

SIZE = 40  # above the small-image rule, so training takes random resized crops


def config(root: Path, cache: Path, **settings) -> DataConfig:
    base = {"image_size": SIZE, "calibration_size": 16, "decode_workers": 2}
    return DataConfig(name="imagefolder", root=root, cache_dir=cache, **{**base, **settings})


def folder_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def own_copy(image_folder: Path, tmp_path: Path) -> Path:
    """A copy of the session's folder that a test may change."""
    return Path(shutil.copytree(image_folder, tmp_path / "photos"))


def test_splits_are_made_by_the_eval_transform(image_folder: Path, tmp_path: Path):
    before = folder_digest(image_folder)
    splits = load_data(config(image_folder, tmp_path / "cache"))
    spec = splits.spec
    assert spec.class_names == ("bag", "sneaker", "t-shirt", "trouser")  # sorted folder names
    assert spec.augmentation == RANDOM_RESIZED_CROP and spec.image_size == SIZE
    assert splits.sizes() == {"train": 80, "val": 80, "calibration": 16, "test": 80}
    assert splits.test.source == "test" and splits.skipped == ()
    transform = spec.transform()
    assert transform.size == (SIZE, SIZE) and transform.crop_pct == 0.875
    files = sorted((image_folder / "test").rglob("*.*"))
    expected = np.stack([eval_file(p, transform) for p in files])
    np.testing.assert_array_equal(to_raw_numpy(splits.test), expected)
    x, y = to_numpy(splits.calibration)
    assert x.shape == (16, 3, SIZE, SIZE) and len(set(y.tolist())) == 4
    assert folder_digest(image_folder) == before  # nothing in the folder is written


def test_training_batches_are_random_resized_crops_of_the_cache(image_folder: Path, tmp_path):
    splits = load_data(config(image_folder, tmp_path / "cache"))
    loader = make_loader(splits.train, 16, shuffle=True, seed=1, augment=RANDOM_RESIZED_CROP)
    first = [x for x, _ in loader]
    again = [x for x, _ in loader]
    assert first[0].shape == (16, 3, SIZE, SIZE) and len(first) == 5
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    loader.set_epoch(1)
    assert not torch.equal(first[0], next(iter(loader))[0])
    plain = next(iter(make_loader(splits.train, 16, shuffle=False, seed=0)))[0]
    assert plain.shape == (16, 3, SIZE, SIZE)  # the centre view, without augmentation


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(own_copy: Path, tmp_path: Path):
    cfg = config(own_copy, tmp_path / "cache")
    first = prepare_folder(cfg)
    assert all(d.built for d in first.decoded.values())
    second = prepare_folder(cfg)
    assert not any(d.built for d in second.decoded.values())
    victim = next((own_copy / "val" / "bag").iterdir())
    os.utime(victim, ns=(1, 1))  # changed mtime: val is rebuilt, the others are not
    third = prepare_folder(cfg)
    assert third.decoded["val"].built and not third.decoded["train"].built
    victim.unlink()  # a removed file
    assert len(prepare_folder(cfg).decoded["val"].records) == 79
    caches = sorted(p.name for p in (tmp_path / "cache").glob("val-*"))
    assert len(caches) == 2  # one .npy and its .json index: older ones removed
    changed = prepare_folder(config(own_copy, tmp_path / "cache", image_size=48))
    assert changed.decoded["val"].built and changed.decoded["val"].images.shape[-1] == 48


@pytest.mark.parametrize("case", ["truncated", "empty", "text"])
def test_a_bad_file_stops_the_load_unless_skipped(
    own_copy: Path, bad_image_files: dict[str, Path], tmp_path: Path, case: str
):
    target = own_copy / "train" / "bag" / bad_image_files[case].name
    shutil.copy(bad_image_files[case], target)
    before = folder_digest(own_copy)
    with pytest.raises(BadImageError, match=target.name) as info:
        load_data(config(own_copy, tmp_path / "cache"))
    assert "\n" not in str(info.value)
    splits = load_data(config(own_copy, tmp_path / "cache", on_bad_image="skip"))
    assert [name for name, _ in splits.skipped] == [f"train/bag/{target.name}"]
    assert len(splits.train) == 80  # 81 files, the bad one left out
    assert folder_digest(own_copy) == before


def test_structural_problems_are_clear_errors(own_copy: Path, tmp_path: Path):
    cfg = config(own_copy, tmp_path / "cache")
    (own_copy / "train" / "empty-class").mkdir()
    with pytest.raises(DataError, match="'empty-class' is in train/ but not in val/"):
        check_folder(cfg)
    for split in ("val", "test"):
        (own_copy / split / "empty-class").mkdir()
    with pytest.raises(DataError, match="empty-class holds no image files"):
        check_folder(cfg)
    for split in ("train", "val", "test"):
        (own_copy / split / "empty-class").rmdir()
    outside = tmp_path / "outside.png"
    shutil.copy(next((own_copy / "val" / "bag").glob("*.png")), outside)
    (own_copy / "train" / "bag" / "link.png").symlink_to(outside)
    with pytest.raises(DataError, match="outside data.root"):
        check_folder(cfg)
    (own_copy / "train" / "bag" / "link.png").unlink()


def test_duplicates_across_splits_stop_unless_allowed(own_copy: Path, tmp_path: Path):
    source = next((own_copy / "train" / "sneaker").iterdir())
    shutil.copy(source, own_copy / "test" / "sneaker" / f"copy{source.suffix}")
    with pytest.raises(DataError, match="identical images in two splits.*allow_duplicates"):
        check_folder(config(own_copy, tmp_path / "cache"))
    check = check_folder(config(own_copy, tmp_path / "cache", allow_duplicates=True))
    assert check.duplicates == [[f"test/sneaker/copy{source.suffix}", f"train/sneaker/{source.name}"]]  # fmt: skip
    assert check.images["test"]["sneaker"] == 21 and sum(check.modes.values()) == 241


def test_small_images_keep_pad_and_crop(image_folder: Path, tmp_path: Path):
    splits = load_data(config(image_folder, tmp_path / "cache", image_size=28, channels=1))
    assert splits.spec.augmentation == "crop4+flip" and splits.spec.in_channels == 1
    assert splits.spec.transform().small_image
    assert to_raw_numpy(splits.val).shape == (80, 1, 28, 28)
    batch = next(iter(make_loader(splits.train, 8, shuffle=True, seed=0, augment="crop4+flip")))
    assert batch[0].shape == (8, 1, 28, 28)


def test_a_planted_pickle_in_the_cache_is_never_loaded(image_folder: Path, tmp_path: Path):
    cfg = config(image_folder, tmp_path / "cache")
    first = prepare_folder(cfg).decoded["val"]
    expected = np.array(first.images)  # read before the file under the mapping is replaced
    first.cache_file.unlink()
    np.save(first.cache_file, np.array([{"payload": "code"}], dtype=object), allow_pickle=True)
    again = prepare_folder(cfg).decoded["val"]  # refused (allow_pickle=False), decoded anew
    assert again.built and again.images.dtype == np.uint8
    np.testing.assert_array_equal(again.images, expected)
