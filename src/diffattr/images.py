"""Image conversions: float images in [-1, 1] (what datasets store and models generate, channels
first) to pixels for files, figures and CLIP; the one copy of each.

* :func:`to_uint8`: any shape, values clipped to [-1, 1], then ``round((x + 1) · 127.5)``;
* :func:`channels_last`: [..., C, H, W] to uint8 [..., H, W, C];
* :func:`to_rgb`: uint8 [..., H, W, C] to three channels (grey repeated, a fourth dropped);
* :func:`to_display`: one image [C, H, W] to uint8 [H, W] (grey) or [H, W, 3];
* :func:`to_unit_display`: one image [C, H, W] to float [H, W] or [H, W, 3] in [0, 1];
* :func:`save_png`: uint8 pixels to a PNG file, enlarged by nearest neighbour.

The arithmetic runs in the input's float dtype (float32 stays float32), as it did in each
former copy, so the pixels are the same to the bit.
"""

from __future__ import annotations

import os

import numpy as np

from diffattr.errors import ConfigError


def to_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 0..255 of float images in [-1, 1] (clipped first), same shape."""
    return ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def channels_last(images: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, C] of float images [..., C, H, W] in [-1, 1]."""
    return np.moveaxis(to_uint8(images), -3, -1)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Pixels [..., H, W, C] with three channels: grey (C = 1) repeated, channels past 3 dropped."""
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]


def to_display(image: np.ndarray) -> np.ndarray:
    """A float image [C, H, W] in [-1, 1] as uint8 [H, W] (grayscale) or [H, W, 3]."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3:
        raise ConfigError(f"expected an image [C, H, W], got shape {array.shape}")
    pixels = channels_last(array)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., :3]


def to_unit_display(image: np.ndarray) -> np.ndarray:
    """A float image [C, H, W] in [-1, 1] as float [H, W] or [H, W, C] in [0, 1] (imshow)."""
    pixels = (np.clip(image, -1, 1) + 1) / 2
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def save_png(path: str | os.PathLike, pixels: np.ndarray, scale: int = 4) -> None:
    """Write uint8 pixels [H, W] or [H, W, C] as a PNG, each pixel ``scale`` × ``scale``."""
    from PIL import Image

    from diffattr import store

    image = Image.fromarray(pixels)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with store.atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
