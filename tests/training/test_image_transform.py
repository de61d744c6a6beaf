"""The reference eval transform: file formats, PIL modes, EXIF, bad files, resize and crop."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.errors import BadImageError, DataError
from training.image_transform import EvalTransform, eval_array, eval_file, load_image

RGB = EvalTransform(size=(16, 16))
GREY = EvalTransform(size=(16, 16), channels=1)


def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)  # fmt: skip


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_spec_defaults_and_validation():
    assert RGB.crop_pct == 0.875 and RGB.interpolation == "bilinear" and RGB.antialias
    assert RGB.background == (255, 255, 255) and RGB.value_range == (0, 255)
    assert GREY.channel_order == "L" and len(GREY.mean) == 1
    assert EvalTransform.model_validate(RGB.model_dump(mode="json")) == RGB
    with pytest.raises(ValueError, match="mean and std"):
        EvalTransform(size=(8, 8), channels=1, mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    with pytest.raises(ValueError, match="extra"):
        EvalTransform(size=(8, 8), colour="yes")


@pytest.mark.parametrize("size", [(16, 16), (24, 24), (12, 20)])
def test_shorter_side_resize_and_centre_crop_match_torchvision(size):
    from torchvision import transforms

    spec = EvalTransform(size=size)
    for w, h in [(40, 30), (30, 53), (16, 16), (101, 37)]:
        image = Image.fromarray(_gradient(w, h))
        out = eval_array(image, spec)
        assert out.dtype == np.uint8 and out.shape == (3, *size)
        if size[0] == size[1]:
            side = int(size[0] / 0.875)
            reference = transforms.Compose(
                [transforms.Resize(side), transforms.CenterCrop(size[0])]
            )(image)
            np.testing.assert_array_equal(out, np.asarray(reference).transpose(2, 0, 1))


def test_every_mode_converts_to_the_channels():
    pixels = _gradient(20, 12)
    rgba = np.concatenate([pixels, np.full((12, 20, 1), 255, np.uint8)], -1)
    rgba[:, :5, 3] = 0  # a transparent strip lands on the white background
    images = {
        "L": Image.fromarray(pixels[..., 0]),
        "LA": Image.fromarray(pixels[..., :2]).convert("LA"),
        "RGB": Image.fromarray(pixels),
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "P": Image.fromarray(pixels).convert("P"),
        "CMYK": Image.fromarray(pixels).convert("CMYK"),
        "I;16": Image.fromarray(pixels[..., 0].astype(np.uint16) * 257),
    }
    for mode, image in images.items():
        assert image.mode == mode
        for spec, channels in ((RGB, 3), (GREY, 1)):
            loaded = load_image(_encode(image, "TIFF" if mode == "CMYK" else "PNG"), spec)
            assert loaded.mode == ("RGB" if channels == 3 else "L")
            assert eval_array(loaded, spec).shape == (channels, 16, 16)
    sixteen = load_image(_encode(images["I;16"], "PNG"), GREY)
    np.testing.assert_array_equal(np.asarray(sixteen), pixels[..., 0])
    on_white = np.asarray(load_image(_encode(images["RGBA"], "PNG"), RGB))
    assert (on_white[:, :5] == 255).all() and (on_white[:, 5:] == pixels[:, 5:]).all()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_formats_read_from_files_and_bytes(tmp_path: Path, fmt: str):
    image = Image.fromarray(_gradient(33, 21))
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(_encode(image, fmt))
    from_file, from_bytes = eval_file(path, RGB), eval_file(path.read_bytes(), RGB)
    np.testing.assert_array_equal(from_file, from_bytes)
    if fmt in ("PNG", "BMP"):  # lossless: the same as the array itself
        np.testing.assert_array_equal(from_file, eval_array(image, RGB))


def test_exif_orientation_is_applied():
    image = Image.fromarray(_gradient(30, 10))  # landscape pixels, tagged "rotate 90 CW"
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(_encode(image, "JPEG", exif=exif.tobytes(), quality=95), RGB)
    assert upright.size == (10, 30)


def test_bad_files_raise_a_typed_error_naming_the_file(tmp_path: Path):
    good = _encode(Image.fromarray(_gradient(64, 64)), "JPEG")
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"not an image at all\n",
        "truncated.jpg": good[: len(good) // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImageError, match=name) as info:
            load_image(tmp_path / name, RGB)
        assert isinstance(info.value, DataError)
    with pytest.raises(BadImageError, match="missing.png"):
        load_image(tmp_path / "missing.png", RGB)


def test_decompression_bomb_is_refused(monkeypatch):
    data = _encode(Image.new("L", (100, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # PIL's own limit, lowered for the test
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(data, RGB, name="bomb.png")


def test_small_images_are_used_as_they_are():
    spec = EvalTransform(size=(28, 28), channels=1, small_image=True)
    pixels = _gradient(28, 28)[..., 0]
    np.testing.assert_array_equal(eval_array(Image.fromarray(pixels), spec)[0], pixels)
    assert eval_array(Image.fromarray(_gradient(40, 30)), spec).shape == (1, 28, 28)


def test_without_antialiasing_and_other_interpolations():
    image = Image.fromarray(_gradient(80, 60))
    smooth = eval_array(image, EvalTransform(size=(16, 16)))
    sharp = eval_array(image, EvalTransform(size=(16, 16), antialias=False))
    assert sharp.shape == smooth.shape and not np.array_equal(sharp, smooth)
    for interpolation in ("bicubic", "nearest"):
        spec = EvalTransform(size=(16, 16), interpolation=interpolation)
        assert eval_array(image, spec).shape == (3, 16, 16)


def test_every_file_of_the_image_folder_loads_and_the_bad_ones_do_not(
    image_folder: Path, bad_image_files: dict[str, Path]
):
    files = sorted(p for p in image_folder.rglob("*") if p.is_file())
    assert len(files) == 240 and {p.suffix for p in files} == {".jpg", ".png", ".webp", ".bmp"}
    for path in files:
        assert eval_file(path, RGB).shape == (3, 16, 16)
    rotated = [p for p in files if p.suffix == ".jpg" and Image.open(p).getexif().get(0x0112)]
    assert rotated
    for path in rotated:  # stored turned: upright again only with the EXIF orientation applied
        stored = Image.open(path)
        assert load_image(path, RGB).size == stored.size[::-1]
    for path in bad_image_files.values():
        with pytest.raises(BadImageError, match=path.name):
            load_image(path, RGB)
