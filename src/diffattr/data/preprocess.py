"""Image preprocessing: uint8 HxWxC source images to float32 [C, H, W] tensors in [-1, 1].

The steps follow the reference torchvision pipeline: optional ``CenterCrop(center_crop)``, then
``Resize(resolution)`` (bilinear, short side = resolution), ``CenterCrop(resolution)``,
``ToTensor()`` and ``Normalize(0.5, 0.5)``. Channel conversion (grayscale or RGB) happens first,
on the PIL image, as ``Image.convert`` does in the reference loaders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from diffattr.errors import ConfigError, DataError

VALID_CHANNELS = (1, 3)


def to_uint8_hwc(image: Any, where: str = "image") -> np.ndarray:
    """Turn a PIL image or an array (HxW, HxWxC; uint8 or float in [0, 1]) into uint8 HxWxC."""
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        array = np.asarray(image)
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise DataError(
            f"{where}: image has shape {array.shape}; expected HxW or HxWxC with C in (1, 3, 4)"
        )
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            raise DataError(
                f"{where}: float image has values in [{array.min()}, {array.max()}]; "
                "float images must lie in [0, 1] (or be stored as uint8 0..255)"
            )
        return np.round(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(
                f"{where}: integer image has values in [{array.min()}, {array.max()}]; "
                "expected 0..255"
            )
        return array.astype(np.uint8)
    raise DataError(f"{where}: unsupported image dtype {array.dtype}; expected uint8 or float")


def check_preprocess_options(resolution: Any, channels: Any, center_crop: Any) -> None:
    """Validate the preprocessing keys of the ``data`` config block."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, (int, np.integer))
        or resolution < 1
    ):
        raise ConfigError(f"data.resolution = {resolution!r}; expected a positive integer")
    if isinstance(channels, bool) or channels not in VALID_CHANNELS:
        raise ConfigError(f"data.channels = {channels!r}; expected 1 (grayscale) or 3 (RGB)")
    if center_crop is not None and (
        isinstance(center_crop, bool)
        or not isinstance(center_crop, (int, np.integer))
        or center_crop < 1
    ):
        raise ConfigError(
            f"data.center_crop = {center_crop!r}; expected null or a positive integer"
        )


def _center_crop(image: Image.Image, size: int, where: str) -> Image.Image:
    width, height = image.size
    if size > width or size > height:
        raise DataError(
            f"{where}: cannot center-crop {size}x{size} from a {width}x{height} image; "
            f"center_crop must be at most {min(width, height)}"
        )
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess_image(
    image: Any,
    resolution: int,
    channels: int,
    center_crop: int | None = None,
    where: str = "image",
) -> np.ndarray:
    """Preprocess one image to float32 [channels, resolution, resolution] in [-1, 1]."""
    array = to_uint8_hwc(image, where)
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    pil = pil.convert("L" if channels == 1 else "RGB")
    if center_crop is not None:
        pil = _center_crop(pil, int(center_crop), where)
    width, height = pil.size
    if width <= height:
        new_size = (resolution, int(resolution * height / width))
    else:
        new_size = (int(resolution * width / height), resolution)
    if new_size != (width, height):
        pil = pil.resize(new_size, Image.BILINEAR)
    pil = _center_crop(pil, resolution, where)
    out = np.asarray(pil, dtype=np.float32) / np.float32(255.0)
    if out.ndim == 2:
        out = out[None]
    else:
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray((out - np.float32(0.5)) / np.float32(0.5), dtype=np.float32)


def preprocess_images(
    images: Sequence[Any] | np.ndarray,
    resolution: int,
    channels: int,
    center_crop: int | None = None,
) -> np.ndarray:
    """Preprocess a batch of images to float32 [n, channels, resolution, resolution]."""
    check_preprocess_options(resolution, channels, center_crop)
    out = np.empty((len(images), channels, resolution, resolution), dtype=np.float32)
    for row in range(len(images)):
        out[row] = preprocess_image(images[row], resolution, channels, center_crop, f"image {row}")
    return out
