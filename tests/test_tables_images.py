"""The one table renderer (diffattr.tables) and the one pixel conversion (diffattr.images)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffattr import images, tables
from diffattr.errors import ConfigError

ROWS = [{"method": "a<b", "lds": 0.123456789, "K": 10}, {"method": "c", "lds": math.nan}]


def test_csv_keeps_exact_floats_and_refuses_unknown_keys():
    assert tables.csv_text(ROWS[:1], ["method", "lds", "K"]) == (
        "method,lds,K\na<b,0.123456789,10\n"
    )
    with pytest.raises(ValueError, match="K"):
        tables.csv_text(ROWS[:1], ["method", "lds"])


def test_markdown_and_html_cells():
    assert tables.markdown_table(ROWS, ["method", "lds", "K"]).splitlines() == [
        "| method | lds | K |",
        "|---|---|---|",
        "| a<b | 0.123457 | 10 |",
        "| c | nan |  |",
    ]
    page = tables.html_table([*ROWS, {"method": "big", "lds": 123456.7}], ["method", "lds"])
    assert "<td>a&lt;b</td><td>0.1235</td>" in page
    assert "<td>c</td><td>–</td>" in page and "<td>123457</td>" in page
    assert page.startswith("<table><thead><tr><th>method</th>")


def test_pixels_follow_the_formula_in_the_input_dtype():
    values = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    assert images.to_uint8(values).tolist() == [0, 0, 64, 128, 191, 255, 255]
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        batch = rng.uniform(-1.2, 1.2, (3, 2, 4, 5)).astype(dtype)
        direct = ((np.clip(batch, -1, 1) + 1) * 127.5).round().astype(np.uint8)
        assert np.array_equal(images.channels_last(batch), direct.transpose(0, 2, 3, 1))


def test_channels_and_display_shapes():
    gray = np.zeros((2, 1, 4, 5), np.float32)
    rgba = np.zeros((2, 4, 4, 5), np.float32)
    assert images.to_rgb(images.channels_last(gray)).shape == (2, 4, 5, 3)
    assert images.to_rgb(images.channels_last(rgba)).shape == (2, 4, 5, 3)
    assert images.to_display(gray[0]).shape == (4, 5)
    assert images.to_display(rgba[0]).shape == (4, 5, 3)
    assert images.to_unit_display(gray[0]).shape == (4, 5)
    assert images.to_unit_display(np.ones((3, 4, 5))).max() == 1.0
    with pytest.raises(ConfigError, match=r"\[C, H, W\]"):
        images.to_display(gray[0, 0])


def test_clip_sees_rgb_pixels():
    from diffattr.clip import to_pil_images

    gray = np.linspace(-1, 1, 2 * 16).reshape(2, 1, 4, 4)
    (first, _) = to_pil_images(gray)
    assert first.mode == "RGB"
    pixels = np.asarray(first)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert np.array_equal(pixels[..., 0], images.channels_last(gray)[0, ..., 0])
    with pytest.raises(ConfigError, match="2 channels"):
        to_pil_images(np.zeros((1, 2, 4, 4)))
