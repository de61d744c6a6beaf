"""The one reference implementation of the eval transform: image file -> uint8 (C, H, W).

Evaluation, calibration, validation, ``onedge predict`` and the MLflow pyfunc all call
:func:`load_image` then :func:`eval_array`; no other code resizes an image for a model.

The policy is the one timm and torchvision users know: resize the shorter side to
``size / crop_pct`` (bilinear, antialiased, by default), then take the centre crop of ``size``.
For a square ``size`` the result equals torchvision's ``Resize(floor(size / crop_pct))`` +
``CenterCrop(size)`` on a PIL image. For ``height != width`` the image is scaled, keeping its
aspect, until it covers ``floor(height / crop_pct) x floor(width / crop_pct)``, then cropped.
Small images (``small_image``, the 28-px-class data sets) skip the crop margin: an image already
at ``size`` is used exactly as it is, any other is resized straight to ``size``.

Artifacts take the uint8 array (values 0-255) and normalise with ``mean``/``std`` inside.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field, model_validator

from onedge.strict import StrictModel
from training.errors import BadImageError

Size = tuple[int, int]  # (height, width)
SMALL_IMAGE_SIDE = 32  # image sizes up to this side are "small": used as they are
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_WITH_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}


def is_small_image(size: Size) -> bool:
    """The rule for the 28-px-class data sets: both sides at most SMALL_IMAGE_SIDE pixels."""
    return max(size) <= SMALL_IMAGE_SIDE


class EvalTransform(StrictModel):
    """How an image becomes what a model takes: written into manifests and MLflow models."""

    size: Size = Field(description="(height, width) of the model's input in pixels")
    crop_pct: float = Field(0.875, gt=0.0, le=1.0, description="centre crop / resized side")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    antialias: bool = True
    channels: Literal[1, 3] = 3
    channel_order: Literal["RGB", "L"] = Field(
        "RGB", description="RGB for 3 channels, L (luma, ITU-R 601-2) for 1"
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB that transparent pixels are composited on (white)"
    )
    mean: tuple[float, ...] = Field(IMAGENET_MEAN, description="per channel, values in 0-1")
    std: tuple[float, ...] = Field(IMAGENET_STD, description="per channel, values in 0-1")
    value_range: tuple[int, int] = Field(
        (0, 255), description="the uint8 values the artifact takes"
    )
    small_image: bool = Field(False, description="no crop margin: images used as they are")

    @model_validator(mode="before")
    @classmethod
    def _channel_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("channels") == 1:
            data = {"channel_order": "L", **data}
            if "mean" not in data and "std" not in data:
                data.update(mean=(0.5,), std=(0.5,))
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EvalTransform:
        problems = []
        if min(self.size) <= 0:
            problems.append(f"size must be positive, got {self.size}")
        if (self.channels, self.channel_order) not in {(3, "RGB"), (1, "L")}:
            problems.append(f"channel_order {self.channel_order} does not fit {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            problems.append(f"mean and std need {self.channels} values, one per channel")
        if any(s <= 0 for s in self.std) or not all(0 <= v <= 255 for v in self.background):
            problems.append("std must be positive and background values in 0-255")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resized_size(self, height: int, width: int) -> Size:
        """(height, width) an image of that size is resized to before the centre crop."""
        th, tw = self.size
        if self.small_image:
            return th, tw
        if th == tw:  # torchvision's Resize(int): shorter side, the longer one truncated
            short = math.floor(th / self.crop_pct)
            if height <= width:
                return short, int(short * width / height)
            return int(short * height / width), short
        need_h, need_w = math.floor(th / self.crop_pct), math.floor(tw / self.crop_pct)
        scale = max(need_h / height, need_w / width)
        return max(need_h, round(height * scale)), max(need_w, round(width * scale))


def _open(source: Path | bytes, name: str) -> Image.Image:
    if isinstance(source, Path):
        try:
            if source.stat().st_size == 0:
                raise BadImageError(name, "the file is empty (0 bytes)")
            data = source.read_bytes()
        except OSError as err:
            raise BadImageError(name, f"cannot be read ({err.strerror or err})") from err
    else:
        data = bytes(source)
        if not data:
            raise BadImageError(name, "the image is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadImageError(name, f"decompression bomb refused ({err})") from err
        except UnidentifiedImageError as err:
            raise BadImageError(name, "not an image PIL can read") from err
        except (OSError, SyntaxError, ValueError) as err:
            raise BadImageError(name, f"truncated or corrupt image ({err})") from err
    return image


def to_channels(image: Image.Image, spec: EvalTransform) -> Image.Image:
    """``image`` in the spec's mode (RGB or L) whatever PIL mode it has."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:  # 16-bit grey: keep the top 8 bits' worth (v / 257)
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))
    elif mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    if image.mode in _WITH_ALPHA:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*spec.background, 255))
        image = Image.alpha_composite(canvas, rgba).convert("RGB")
    target = "RGB" if spec.channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def open_image(source: Path | bytes, name: str | None = None) -> Image.Image:
    """A fully decoded image, upright (EXIF orientation applied), in the mode the file holds.

    Raises :class:`BadImageError` (naming ``name``, the path, or ``<bytes>``) for a file that is
    not an image, is truncated or empty, or is larger than PIL's decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``; above it PIL warns, and onedge refuses).
    """
    label = name or (str(source) if isinstance(source, Path) else "<bytes>")
    image = _open(source, label)
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, ValueError, SyntaxError) as err:
        raise BadImageError(label, f"unreadable EXIF orientation ({err})") from err
    return image


def load_image(source: Path | bytes, spec: EvalTransform, name: str | None = None) -> Image.Image:
    """:func:`open_image` converted to the spec's channels (RGB or L); see there for errors."""
    return to_channels(open_image(source, name), spec)


def resize(image: Image.Image, size: Size, spec: EvalTransform) -> Image.Image:
    """``image`` resized to (height, width) with the spec's interpolation and antialiasing."""
    height, width = size
    if image.size == (width, height):
        return image
    if spec.antialias or spec.interpolation == "nearest":
        return image.resize((width, height), _RESAMPLE[spec.interpolation])
    import torch

    pixels = torch.from_numpy(np.asarray(image, np.float32).copy())
    pixels = pixels.reshape(image.height, image.width, -1).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(
        pixels, (height, width), mode=spec.interpolation, align_corners=False, antialias=False
    )
    values = out[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()
    return Image.fromarray(values[..., 0] if values.shape[2] == 1 else values, image.mode)


def center_crop(image: Image.Image, size: Size) -> Image.Image:
    """The centre (height, width) of ``image`` (torchvision's rounding of the offsets)."""
    height, width = size
    top = int(round((image.height - height) / 2.0))
    left = int(round((image.width - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def eval_array(image: Image.Image, spec: EvalTransform) -> np.ndarray:
    """THE eval transform: ``image`` as the model's uint8 (C, H, W) input."""
    image = to_channels(image, spec)
    image = resize(image, spec.resized_size(image.height, image.width), spec)
    image = center_crop(image, spec.size)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def eval_file(source: Path | bytes, spec: EvalTransform, name: str | None = None) -> np.ndarray:
    """:func:`load_image` then :func:`eval_array`: an image file as the model's input."""
    return eval_array(load_image(source, spec, name), spec)
