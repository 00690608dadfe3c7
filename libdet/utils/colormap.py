"""A fixed palette of distinct, readable colours for drawing instances, and helpers to pick from it.

The palette holds 80 colours chosen greedily so that each new colour is as far as possible, in CIELAB
space, from every earlier one and from white, black and mid-grey (those would not stand out on images or
behind white text). The first colours are therefore the most distinct: the first 20 differ pairwise by a
CIELAB distance of at least 38, all 80 by at least 17.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["colormap", "random_color", "random_colors"]

# RGB, 0..255, most distinct first.
_PALETTE_RGB = np.array(
    [
        (0, 102, 204),
        (0, 255, 0),
        (255, 0, 0),
        (255, 0, 255),
        (255, 223, 0),
        (0, 255, 191),
        (204, 0, 102),
        (0, 0, 255),
        (153, 96, 0),
        (76, 153, 0),
        (115, 0, 153),
        (0, 223, 255),
        (255, 128, 239),
        (255, 143, 128),
        (255, 207, 128),
        (38, 153, 110),
        (191, 255, 0),
        (153, 0, 0),
        (255, 128, 0),
        (64, 88, 255),
        (153, 76, 134),
        (223, 255, 128),
        (51, 147, 204),
        (143, 153, 76),
        (153, 76, 76),
        (0, 255, 128),
        (255, 64, 88),
        (255, 0, 191),
        (255, 128, 175),
        (159, 128, 255),
        (102, 204, 115),
        (204, 153, 0),
        (128, 255, 239),
        (77, 204, 0),
        (102, 0, 204),
        (0, 38, 153),
        (38, 139, 153),
        (153, 115, 76),
        (179, 204, 0),
        (128, 159, 255),
        (76, 96, 153),
        (153, 0, 115),
        (153, 153, 0),
        (179, 0, 204),
        (204, 89, 51),
        (159, 255, 128),
        (153, 38, 81),
        (204, 204, 102),
        (128, 207, 255),
        (191, 0, 255),
        (0, 204, 179),
        (204, 51, 185),
        (179, 102, 204),
        (0, 153, 57),
        (105, 76, 153),
        (255, 159, 64),
        (255, 175, 128),
        (0, 0, 153),
        (102, 204, 204),
        (204, 26, 0),
        (153, 0, 38),
        (255, 64, 159),
        (96, 153, 76),
        (255, 88, 64),
        (255, 191, 0),
        (0, 204, 77),
        (153, 81, 38),
        (128, 255, 0),
        (255, 255, 0),
        (204, 102, 0),
        (204, 102, 128),
        (128, 204, 51),
        (64, 112, 255),
        (204, 102, 179),
        (153, 124, 38),
        (153, 204, 102),
        (64, 255, 88),
        (204, 51, 51),
        (204, 166, 102),
        (51, 204, 147),
    ],
    dtype=np.float32,
)


def _scaled(colors: np.ndarray, rgb: bool, maximum: float) -> np.ndarray:
    if maximum <= 0:
        raise ValueError(f"colormap: `maximum` must be positive, got {maximum}.")
    colors = colors if rgb else colors[..., ::-1]
    return np.ascontiguousarray(colors * (maximum / 255.0), dtype=np.float32)


def colormap(rgb: bool = False, maximum: float = 255) -> np.ndarray:
    """Return the whole palette.

    Args:
        rgb: channel order RGB if True, BGR (OpenCV order) if False.
        maximum: the value of a full channel: 255 for 8-bit colours, 1 for matplotlib colours.

    Returns:
        ``(80, 3)`` float32 array, most distinct colours first.
    """
    return _scaled(_PALETTE_RGB, rgb, maximum)


def random_color(rgb: bool = False, maximum: float = 255) -> np.ndarray:
    """Return one colour of the palette picked at random (with ``np.random``; seed it for reproducibility).

    Args:
        rgb: channel order RGB if True, BGR if False.
        maximum: the value of a full channel (255 or 1).

    Returns:
        ``(3,)`` float32 array.
    """
    idx = np.random.randint(0, len(_PALETTE_RGB))
    return _scaled(_PALETTE_RGB[idx], rgb, maximum)


def random_colors(N: int, rgb: bool = False, maximum: float = 255) -> list[np.ndarray]:
    """Return ``N`` palette colours in random order (with Python's ``random``), all different when
    ``N <= 80``; beyond that the palette is reused, each colour at most ``ceil(N / 80)`` times.

    Args:
        N: number of colours, ``>= 0``.
        rgb: channel order RGB if True, BGR if False.
        maximum: the value of a full channel (255 or 1).

    Returns:
        list of ``N`` float32 arrays of shape ``(3,)``.
    """
    if N < 0:
        raise ValueError(f"random_colors: `N` must be >= 0, got {N}.")
    n_pal = len(_PALETTE_RGB)
    indices: list[int] = []
    while len(indices) < N:
        indices.extend(random.sample(range(n_pal), min(n_pal, N - len(indices))))
    return [_scaled(_PALETTE_RGB[i], rgb, maximum) for i in indices]
