"""Data sets registry, splits, loader and IDX parsing, on the real digits and Fashion-MNIST."""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onedge.errors import OnedgeError, RegistryError
from training.config import DataConfig
from training.data import (
    DATASETS,
    FASHION_MNIST_ROOT,
    DatasetSpec,
    DataSplits,
    Loader,
    TensorImages,
    augment_batch,
    load_data,
    make_loader,
    read_idx,
    to_numpy,
)
from training.errors import DataError

SPLITS = ("train", "val", "calibration", "test")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # fmt: skip
needs_fashion = pytest.mark.skipif(
    not all((FASHION_MNIST_ROOT / f).is_file() for f in FASHION_FILES),
    reason=f"Fashion-MNIST IDX files absent from {FASHION_MNIST_ROOT} "
    "(apt-get install dataset-fashion-mnist)",
)


def ids(dataset) -> set[tuple[str, int]]:
    """Images a view holds, as (pool, index) pairs, so views over different pools compare."""
    return {(dataset.source, int(i)) for i in dataset.indices}


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(DataConfig(name="digits"))


@pytest.fixture(scope="module")
def fashion() -> DataSplits:
    return load_data(DataConfig(name="fashion-mnist", calibration_size=300))


# ----------------------------------------------------------------------------- registry


def test_registry_holds_every_data_set_and_rejects_unknown_names() -> None:
    expected = {"digits", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder"}
    assert expected <= set(DATASETS.names())
    with pytest.raises(RegistryError, match="known: .*cifar10.*digits.*fashion-mnist"):
        load_data(DataConfig(name="mnist-typo"))


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_set_loads_or_says_what_is_missing(name: str, tmp_path: Path) -> None:
    """Pointed at an empty folder, each entry loads (embedded data) or names what it expects."""
    cfg = DataConfig(name=name, root=tmp_path)
    if name == "digits":
        assert load_data(cfg).spec.name == "digits"
        return
    with pytest.raises(DataError, match=str(tmp_path)):
        load_data(cfg)


# ----------------------------------------------------------------------------- splits


def test_digits_split_sizes_and_disjointness(digits: DataSplits) -> None:
    sizes = digits.sizes()
    assert sizes["test"] == round(0.2 * 1797) == 359
    assert sizes["val"] == round(0.1 * (1797 - 359)) == 144
    assert sizes["train"] == 1797 - 359 - 144
    assert sizes["calibration"] == 512
    train, val, cal, test = (ids(getattr(digits, k)) for k in SPLITS)
    assert not train & val and not train & test and not val & test
    assert not cal & test and not cal & val and cal <= train
    assert len(train | val | test) == 1797  # nothing lost


def test_splits_are_stratified(digits: DataSplits) -> None:
    all_labels = np.bincount(load_digits_labels(), minlength=10)
    for split in ("test", "val"):
        _, y = to_numpy(getattr(digits, split))
        expected = all_labels * len(y) / all_labels.sum()
        assert np.abs(np.bincount(y, minlength=10) - expected).max() < 1.5


def load_digits_labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def test_splits_depend_on_the_split_seed_only(digits: DataSplits) -> None:
    again = load_data(DataConfig(name="digits"))
    other = load_data(DataConfig(name="digits", split_seed=1))
    for split in SPLITS:
        np.testing.assert_array_equal(getattr(digits, split).indices, getattr(again, split).indices)
        assert not np.array_equal(getattr(digits, split).indices, getattr(other, split).indices)


def test_limit_train_and_calibration_come_from_the_training_portion() -> None:
    full = load_data(DataConfig(name="digits", split_seed=3))
    small = load_data(
        DataConfig(name="digits", limit_train=100, calibration_size=5000, split_seed=3)
    )
    assert len(small.train) == 100 and len(small.calibration) == 100  # min(5000, len(train))
    assert ids(small.calibration) == ids(small.train) and ids(small.train) <= ids(full.train)
    np.testing.assert_array_equal(small.val.indices, full.val.indices)  # val, test unaffected
    np.testing.assert_array_equal(small.test.indices, full.test.indices)
    none = load_data(DataConfig(name="digits", val_fraction=0.0, calibration_size=0, split_seed=3))
    assert len(none.val) == len(none.calibration) == 0
    assert to_numpy(none.val)[0].shape == (0, 1, 8, 8)


def test_digits_are_normalised_and_match_the_raw_pixels(digits: DataSplits) -> None:
    x, y = to_numpy(digits.train)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (1294, 1, 8, 8)
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    spec, first = digits.spec, int(digits.train.indices[0])
    raw = load_digits_images()[first]
    np.testing.assert_allclose(x[0, 0], (raw / spec.scale - spec.mean[0]) / spec.std[0], atol=1e-5)
    item_x, item_y = digits.train[0]
    np.testing.assert_allclose(item_x.numpy(), x[0], atol=1e-6)
    assert item_y.dtype == torch.int64 and int(item_y) == y[0]
    assert to_numpy(digits.train, limit=10)[0].shape == (10, 1, 8, 8)


def load_digits_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images


def test_spec_round_trips_through_json(digits: DataSplits) -> None:
    data = json.loads(json.dumps(digits.spec.to_dict()))
    assert DatasetSpec.from_dict(data) == digits.spec
    with pytest.raises(DataError, match="unknown \\['colour'\\]"):
        DatasetSpec.from_dict({**data, "colour": True})
    with pytest.raises(DataError, match="augmentation 'rotate'"):
        DatasetSpec.from_dict({**data, "augmentation": "rotate"})
    with pytest.raises(DataError, match="9 class names for 10 classes"):
        DatasetSpec.from_dict({**data, "class_names": data["class_names"][:9]})


# ----------------------------------------------------------------------------- loader


def batches(loader: Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True))  # fmt: skip


def augmented_digits(digits: DataSplits) -> TensorImages:
    spec = replace(digits.spec, augmentation="crop2+flip")
    return TensorImages(digits.train.images, digits.train.labels, spec, "all", digits.train.indices)


def test_loader_is_a_pure_function_of_seed_and_epoch(digits: DataSplits) -> None:
    data = augmented_digits(digits)
    loader = make_loader(data, 100, shuffle=True, seed=7, augment="crop2+flip")
    assert len(loader) == 13  # ceil(1294 / 100)
    order = torch.cat(loader.batch_indices())
    assert sorted(order.tolist()) == list(range(len(data)))  # each sample once per epoch
    epochs = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        epochs.append(batches(loader))
    assert not same(epochs[0], epochs[1])
    resumed = make_loader(data, 100, shuffle=True, seed=7, augment="crop2+flip")
    resumed.set_epoch(2)
    assert same(batches(resumed), epochs[2])  # a resumed run sees exactly the same batches
    loader.set_epoch(0)
    assert same(batches(loader), epochs[0])
    other_seed = make_loader(data, 100, shuffle=True, seed=8, augment="crop2+flip")
    assert not same(batches(other_seed), epochs[0])
    with pytest.raises(DataError, match="epoch must be >= 0"):
        loader.set_epoch(-1)


def test_loader_batches_match_the_data_set_and_drop_last(digits: DataSplits) -> None:
    plain = make_loader(digits.val, 32, shuffle=False, seed=0)
    x, y = torch.cat([b[0] for b in plain]), torch.cat([b[1] for b in plain])
    np.testing.assert_array_equal(x.numpy(), to_numpy(digits.val)[0])
    assert y.dtype == torch.int64 and len(y) == 144
    dropped = make_loader(digits.val, 32, shuffle=True, seed=0, drop_last=True)
    assert len(dropped) == 4 and [len(b[1]) for b in dropped] == [32] * 4


def test_ddp_shards_are_disjoint_and_equal(digits: DataSplits) -> None:
    world = 3
    shards = []
    for rank in range(world):
        loader = make_loader(digits.train, 64, shuffle=True, seed=1, rank=rank, world_size=world)
        loader.set_epoch(5)
        shards.append(torch.cat(loader.batch_indices()).tolist())
        assert len(loader) == len(list(loader)) == -(-(1294 // world) // 64)
    assert {len(s) for s in shards} == {1294 // world}
    assert len(set().union(*map(set, shards))) == 1294 // world * world  # pairwise disjoint
    with pytest.raises(DataError, match="0 <= rank < world_size"):
        make_loader(digits.train, 64, shuffle=True, seed=1, rank=3, world_size=3)


@pytest.mark.parametrize("padding", [2, 4])
def test_augmentation_is_a_padded_crop_with_optional_flip(padding: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 12, 12, generator=gen)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = augment_batch(x, padding, gen, fill)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    padded = fill.view(1, 3, 1, 1).repeat(64, 1, 12 + 2 * padding, 12 + 2 * padding)
    padded[:, :, padding:-padding, padding:-padding] = x
    seen = set()
    for i in range(64):  # every output is one of the (2p+1)^2 * 2 crops of its own input
        matches = [
            (dy, dx, flip)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            for flip in (False, True)
            if torch.equal(out[i], _crop(padded[i], dy, dx, 12, flip))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 20 and {m[2] for m in seen} == {False, True}  # really random


def _crop(image: torch.Tensor, dy: int, dx: int, size: int, flip: bool) -> torch.Tensor:
    crop = image[:, dy : dy + size, dx : dx + size]
    return crop.flip(-1) if flip else crop


def test_loader_pads_with_black_raw_pixels(digits: DataSplits) -> None:
    """Padding is a raw 0 pixel (like padding the image before normalising), not a 0 after it."""
    spec = replace(digits.spec, augmentation="crop2+flip")
    white = torch.full((64, 1, 8, 8), 16, dtype=torch.uint8)
    pool = TensorImages(white, torch.zeros(64, dtype=torch.int64), spec, "white", np.arange(64))
    x, _ = next(iter(make_loader(pool, 64, shuffle=False, seed=0, augment="crop2+flip")))
    black, full = (pool.normalise(torch.tensor([v])).item() for v in (0, 16))
    torch.testing.assert_close(x.unique(), torch.tensor([black, full]))


def test_augmentation_needs_a_known_name_and_a_spec(digits: DataSplits) -> None:
    with pytest.raises(DataError, match="unknown augmentation 'cutout'"):
        make_loader(digits.train, 8, shuffle=True, seed=0, augment="cutout")
    bare = torch.utils.data.TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="needs a data set from load_data"):
        make_loader(bare, 2, shuffle=True, seed=0, augment="crop4+flip")
    x, y = to_numpy(bare)  # data sets without a vectorised path go through a DataLoader
    assert x.shape == (4, 1, 8, 8) and y.dtype == np.int64


# ----------------------------------------------------------------------------- Fashion-MNIST


@needs_fashion
def test_fashion_mnist_loads_with_official_test_split(fashion: DataSplits) -> None:
    assert fashion.sizes() == {"train": 54000, "val": 6000, "calibration": 300, "test": 10000}
    spec = fashion.spec
    assert (spec.image_size, spec.in_channels, spec.scale) == (28, 1, 255.0)
    assert spec.class_names[0] == "T-shirt/top" and spec.class_names[9] == "Ankle boot"
    assert spec.augmentation == "crop2+flip"
    train, val, cal, test = (ids(getattr(fashion, k)) for k in SPLITS)
    assert not train & val and not cal & val and cal <= train
    assert not (train | val | cal) & test and {s for s, _ in test} == {"test"}
    x, y = to_numpy(fashion.train, limit=5000)
    assert x.shape == (5000, 1, 28, 28) and abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    assert np.bincount(to_numpy(fashion.test)[1]).tolist() == [1000] * 10
    loader = make_loader(fashion.train, 256, shuffle=True, seed=0, augment=spec.augmentation)
    xb, yb = next(iter(loader))
    assert xb.shape == (256, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64


@needs_fashion
def test_fashion_mnist_from_a_root_of_its_own(tmp_path: Path) -> None:
    for name in FASHION_FILES:  # the first 200 real images and labels of each file
        data = read_idx(FASHION_MNIST_ROOT / name, 3 if "images" in name else 1)[:200]
        _write_idx(tmp_path / name, data)
    splits = load_data(DataConfig(name="fashion-mnist", root=tmp_path, val_fraction=0.2))
    assert splits.sizes() == {"train": 160, "val": 40, "calibration": 160, "test": 200}


def _write_idx(path: Path, data: np.ndarray, magic: bytes | None = None) -> None:
    header = (magic or bytes([0, 0, 8, data.ndim])) + struct.pack(f">{data.ndim}I", *data.shape)
    path.write_bytes(gzip.compress(header + data.astype(np.uint8).tobytes()))


def test_idx_round_trip_and_corrupt_files(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(good := tmp_path / "good.gz", images)
    np.testing.assert_array_equal(read_idx(good, 3), images)
    with pytest.raises(DataError, match="not an IDX file of 1-d"):
        read_idx(good, 1)  # an image file read as labels
    _write_idx(bad_magic := tmp_path / "magic.gz", images, magic=b"\x00\x00\x0d\x03")
    with pytest.raises(DataError, match="magic 00000d03"):
        read_idx(bad_magic, 3)
    raw = gzip.decompress(good.read_bytes())
    (short := tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DataError, match="truncated or corrupt.*promises \\(2, 3, 4\\)"):
        read_idx(short, 3)
    (cut := tmp_path / "cut.gz").write_bytes(good.read_bytes()[:-12])  # a cut gzip stream
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(cut, 3)


def test_fashion_mnist_missing_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*dataset-fashion-mnist"):
        load_data(DataConfig(name="fashion-mnist", root=tmp_path))
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-1]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is truncated"):
        load_data(DataConfig(name="fashion-mnist", root=tmp_path))


# ----------------------------------------------------------------------------- torchvision sets


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_torchvision_sets_name_the_missing_files(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_data(DataConfig(name=name, root=tmp_path))
    message = str(caught.value)
    assert str(tmp_path / expected) in message and "data.download=true" in message
    with pytest.raises(DataError, match=f"{name}' needs data.root.*{expected}"):
        load_data(DataConfig(name=name))


# ----------------------------------------------------------------------------- imagefolder


def _image_folder(root: Path, splits: tuple[str, ...], size: int = 16) -> None:
    """Real digits, upscaled to ``size`` pixels, as PNG files in class folders."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for split, start in zip(splits, (0, 30, 40), strict=False):  # no image in two splits
        for i in range(start, start + (30 if split == "train" else 10)):
            label = i % 3  # three classes
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (bunch.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size)).save(folder / f"{i}.png")


def test_imagefolder_loads_and_uses_val_as_test(tmp_path: Path) -> None:
    _image_folder(tmp_path, ("train", "val"))
    cfg = DataConfig(name="imagefolder", root=tmp_path, image_size=16, calibration_size=8)
    splits = load_data(cfg)
    assert splits.spec.image_size == 16 and splits.spec.in_channels == 3
    assert splits.spec.class_names == ("class0", "class1", "class2")
    assert splits.sizes() == {"train": 30, "val": 10, "calibration": 8, "test": 10}
    assert ids(splits.val) == ids(splits.test) and not ids(splits.train) & ids(splits.test)
    assert splits.spec.augmentation == "crop4+flip"  # small images keep pad-and-crop
    loader = make_loader(splits.train, 8, shuffle=True, seed=0, augment="crop4+flip")
    first = batches(loader)
    assert len(first) == 4 and first[0][0].shape == (8, 3, 16, 16)
    assert same(first, batches(loader))
    x, y = to_numpy(splits.test)
    assert x.shape == (10, 3, 16, 16) and x.dtype == np.float32 and y.dtype == np.int64


def test_imagefolder_with_test_folder_and_bad_folders(tmp_path: Path) -> None:
    _image_folder(tmp_path / "a", ("train", "val", "test"))
    splits = load_data(DataConfig(name="imagefolder", root=tmp_path / "a", image_size=16))
    assert splits.test.source == "test" and splits.val.source == "val"
    with pytest.raises(DataError, match="needs data.root holding train/ and val/"):
        load_data(DataConfig(name="imagefolder", root=tmp_path / "missing", image_size=16))
    with pytest.raises(DataError, match="needs data.image_size"):
        load_data(DataConfig(name="imagefolder", root=tmp_path / "a"))
    _image_folder(tmp_path / "c", ("train", "val"))  # other sizes and aspects are resized
    Image.new("RGB", (20, 12)).save(tmp_path / "c" / "train" / "class1" / "5.png")
    mixed = load_data(DataConfig(name="imagefolder", root=tmp_path / "c", image_size=16))
    assert to_numpy(mixed.train)[0].shape == (31, 3, 16, 16)


def test_every_error_is_an_onedge_error() -> None:
    assert issubclass(DataError, OnedgeError) and issubclass(RegistryError, OnedgeError)
