"""The palette: distinct, readable colours in the requested channel order and range."""

import random

import numpy as np
import pytest

from libdet.utils.colormap import colormap, random_color, random_colors


def _lab(rgb01):
    lin = np.where(rgb01 <= 0.04045, rgb01 / 12.92, ((rgb01 + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def test_palette_shape_range_and_order():
    rgb = colormap(rgb=True)
    bgr = colormap()
    assert rgb.shape == (80, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(bgr, rgb[:, ::-1])
    assert rgb.min() >= 0 and rgb.max() <= 255
    np.testing.assert_allclose(colormap(rgb=True, maximum=1), rgb / 255, atol=1e-6)
    with pytest.raises(ValueError, match="maximum"):
        colormap(maximum=0)


def test_palette_is_distinct_and_readable():
    rgb = colormap(rgb=True, maximum=1).astype(np.float64)
    assert len(np.unique(np.round(rgb * 255), axis=0)) == 80
    lab = _lab(rgb)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=2) + np.eye(80) * 1e9
    assert d[:20, :20].min() > 35  # the first colours are very different from each other
    assert d.min() > 15
    # not close to white, black or grey (they would not stand out)
    anchors = _lab(np.array([[1.0, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5]]))
    assert np.linalg.norm(lab[:, None] - anchors[None], axis=2).min() > 15


def test_random_color_and_colors():
    np.random.seed(0)
    c = random_color(rgb=True, maximum=1)
    assert c.shape == (3,) and any(np.allclose(c, p) for p in colormap(rgb=True, maximum=1))
    random.seed(0)
    cols = random_colors(30, rgb=True)
    assert len(cols) == 30 and len({tuple(x) for x in cols}) == 30
    many = random_colors(170)
    assert len(many) == 170 and len({tuple(x) for x in many}) == 80
    assert random_colors(0) == []
    with pytest.raises(ValueError):
        random_colors(-1)
