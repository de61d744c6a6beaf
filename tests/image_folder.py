"""Writes real image folders for the tests: Fashion-MNIST images as photo-like files.

``write_image_folder`` lays out ``train/val/test/<class>/`` with JPEG, PNG, WebP and BMP files at
random sizes and aspect ratios, in L, RGB, RGBA and P modes, some JPEGs carrying an EXIF
orientation tag (their pixels stored turned, so the upright image is the Fashion-MNIST one).
``write_bad_images`` writes the three bad-file cases: a truncated JPEG, a 0-byte file and a text
file named ``.jpg``.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = {0: "t-shirt", 1: "trouser", 7: "sneaker", 8: "bag"}  # Fashion-MNIST label -> folder
FORMATS = {  # format -> (suffix, modes it stores)
    "JPEG": (".jpg", ("L", "RGB")),
    "PNG": (".png", ("L", "RGB", "RGBA", "P")),
    "WEBP": (".webp", ("RGB", "RGBA")),
    "BMP": (".bmp", ("L", "RGB", "P")),
}
EXIF_ORIENTATION = 0x0112


def fashion_mnist_images(count: int = 2000, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` Fashion-MNIST images (N, 28, 28) uint8 and labels (a partial read)."""
    with gzip.open(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz") as stream:
        stream.read(16)
        images = np.frombuffer(stream.read(count * 784), np.uint8).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz") as stream:
        stream.read(8)
        labels = np.frombuffer(stream.read(count), np.uint8)
    return images, labels


def photo(pixels: np.ndarray, rng: np.random.Generator, sides: tuple[int, int]) -> Image.Image:
    """A 28x28 grey image upscaled to a random size and aspect, tinted, as an RGB image."""
    side = int(rng.integers(*sides))
    aspect = float(rng.uniform(0.75, 4 / 3))
    width, height = max(8, round(side * aspect**0.5)), max(8, round(side / aspect**0.5))
    grey = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    tint = rng.uniform(0.6, 1.0, 3)
    rgb = (np.asarray(grey, np.float32)[..., None] * tint).round().astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def encode(image: Image.Image, fmt: str, mode: str, rotate: bool) -> bytes:
    """``image`` in ``mode`` as ``fmt`` bytes; with ``rotate`` stored turned + EXIF orientation 6."""
    if mode == "RGBA":
        alpha = np.full((image.height, image.width), 255, np.uint8)
        alpha[: max(1, image.height // 8)] = 0  # a transparent top band
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(alpha))
    else:
        image = image.convert(mode)
    buffer, extra = io.BytesIO(), {}
    if rotate:
        image = image.transpose(Image.Transpose.ROTATE_90)  # exif_transpose turns it back
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        extra["exif"] = exif.tobytes()
    if fmt == "JPEG":
        extra["quality"] = 90
    image.save(buffer, fmt, **extra)
    return buffer.getvalue()


def write_image_folder(
    root: Path, per_class: int = 20, sides: tuple[int, int] = (40, 100), seed: int = 0
) -> Path:
    """``root/{train,val,test}/<class>/`` with ``per_class`` images per class and split."""
    rng = np.random.default_rng(seed)
    images, labels = fashion_mnist_images()
    formats = list(FORMATS)
    for label, name in CLASSES.items():
        chosen = rng.permutation(np.flatnonzero(labels == label))[: 3 * per_class]
        for split, rows in zip(("train", "val", "test"), np.split(chosen, 3), strict=True):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, row in enumerate(rows):
                fmt = formats[i % len(formats)]
                suffix, modes = FORMATS[fmt]
                mode = modes[(i // len(formats)) % len(modes)]
                rotate = fmt == "JPEG" and i % 3 == 0
                data = encode(photo(images[row], rng, sides), fmt, mode, rotate)
                (folder / f"{row:05d}{suffix}").write_bytes(data)
    return root


def write_bad_images(folder: Path) -> dict[str, Path]:
    """The bad-file cases in ``folder``: {"truncated", "empty", "text"} -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    good = encode(Image.new("RGB", (64, 64), (120, 30, 200)), "JPEG", "RGB", rotate=False)
    files = {
        "truncated": (folder / "truncated.jpg", good[: len(good) // 2]),
        "empty": (folder / "empty.jpg", b""),
        "text": (folder / "notes.jpg", b"this is a text file, not a photo\n"),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {key: path for key, (path, _) in files.items()}
