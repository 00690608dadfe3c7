"""Anchor generators: a fixed set of "cell anchors" per feature level, replicated at every location.

Anchors are buffers of the generator (they follow ``.to(device)``) but are not persistent, so they do
not appear in the model's state_dict (as in detectron2 checkpoints).
"""

from __future__ import annotations

import collections.abc
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from libdet.layers import move_device_like
from libdet.structures import Boxes, RotatedBoxes

from .registries import ANCHOR_GENERATOR_REGISTRY  # noqa: F401 (detectron2 path; YAML names)

__all__ = ["BufferList", "DefaultAnchorGenerator", "RotatedAnchorGenerator"]

_Params = Sequence[float] | Sequence[Sequence[float]]


class BufferList(nn.Module):
    """A list of tensors registered as non-persistent buffers ``"0"``, ``"1"``, ... of a module.

    Args:
        buffers: the tensors.
    """

    def __init__(self, buffers: Sequence[torch.Tensor]):
        super().__init__()
        for i, buffer in enumerate(buffers):
            # Non-persistent: anchors are derived from the constructor arguments, not learned.
            self.register_buffer(str(i), buffer, persistent=False)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._buffers.values())


def _create_grid_offsets(
    size: list[int], stride: int, offset: float, target_device_tensor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (H*W,) x and y coordinates ``(index + offset) * stride`` of a grid, row-major."""
    grid_height, grid_width = size
    shifts_x = move_device_like(
        torch.arange(offset * stride, grid_width * stride, step=stride, dtype=torch.float32),
        target_device_tensor,
    )
    shifts_y = move_device_like(
        torch.arange(offset * stride, grid_height * stride, step=stride, dtype=torch.float32),
        target_device_tensor,
    )
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def _broadcast_params(params: _Params, num_features: int, name: str) -> list[list[float]]:
    """Turn ``params`` (a list of floats, or one list per feature level) into one list per level."""
    if not isinstance(params, collections.abc.Sequence) or isinstance(params, str):
        raise TypeError(f"anchor generator: `{name}` must be a list, got {params!r}.")
    if len(params) == 0:
        raise ValueError(f"anchor generator: `{name}` must not be empty.")
    if not isinstance(params[0], collections.abc.Sequence):  # list[float]: the same for all levels
        return [list(params)] * num_features
    if len(params) == 1:
        return [list(params[0])] * num_features
    if len(params) != num_features:
        raise ValueError(
            f"anchor generator: `{name}` has {len(params)} lists but there are {num_features} feature "
            "levels (one per stride); give one list per level or a single list for all."
        )
    return [list(p) for p in params]


class DefaultAnchorGenerator(nn.Module):
    """Axis-aligned anchors: for each level, every ``size`` x every ``aspect_ratio`` (sizes outer), centred
    at ``(index + offset) * stride`` of every feature-map location.

    Args:
        sizes: anchor sizes (sqrt of the area) in absolute pixels: a list per feature level, or one list
            used for all levels (e.g. ``[[32], [64], [128], [256], [512]]`` for FPN).
        aspect_ratios: anchor height / width ratios: a list per level or one list for all (e.g.
            ``[[0.5, 1.0, 2.0]]``).
        strides: stride of each feature level in pixels.
        offset: relative offset of the first anchor centre, in ``[0, 1)`` of the stride (0.5 centres the
            anchors in the cells; 0.0 puts them at the top-left corner as in the original Faster R-CNN).
    """

    box_dim: int = 4
    # For TorchScript (scripting_with_instances): a compile-time constant, and Python-side conveniences it
    # need not compile.
    __constants__ = ["box_dim"]
    __jit_unused_properties__ = ["num_cell_anchors", "num_anchors"]

    def __init__(self, *, sizes: _Params, aspect_ratios: _Params, strides: Sequence[int], offset: float = 0.5):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        self.cell_anchors = self._calculate_anchors(sizes, aspect_ratios)
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"DefaultAnchorGenerator: `offset` must be in [0, 1), got {offset}.")
        self.offset = offset

    def _calculate_anchors(self, sizes: list[list[float]], aspect_ratios: list[list[float]]) -> BufferList:
        return BufferList([self.generate_cell_anchors(s, a).float() for s, a in zip(sizes, aspect_ratios)])

    @property
    def num_cell_anchors(self) -> list[int]:
        """Alias of :attr:`num_anchors`."""
        return self.num_anchors

    @property
    def num_anchors(self) -> list[int]:
        """Number of anchors per location, for each feature level (e.g. [3, 3, 3, 3, 3])."""
        return [len(cell_anchors) for cell_anchors in self.cell_anchors]

    def _grid_anchors(self, grid_sizes: list[list[int]]) -> list[torch.Tensor]:
        anchors = []
        # named_buffers(), not iter(): TorchScript can compile the former.
        buffers: list[torch.Tensor] = [x[1] for x in self.cell_anchors.named_buffers()]
        for size, stride, base_anchors in zip(grid_sizes, self.strides, buffers):
            shift_x, shift_y = _create_grid_offsets(size, stride, self.offset, base_anchors)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def generate_cell_anchors(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1, 2),
    ) -> torch.Tensor:
        """Anchors centred at (0, 0): for each size, for each aspect ratio, a box of area ``size**2``
        and ``height / width = aspect_ratio``.

        Returns:
            Tensor[len(sizes) * len(aspect_ratios), 4] of (x0, y0, x1, y1).
        """
        anchors = []
        for size in sizes:
            area = size**2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors)

    def forward(self, features: list[torch.Tensor]) -> list[Boxes]:
        """
        Args:
            features: one Tensor[N, C, Hi, Wi] per feature level (only the sizes are used).

        Returns:
            one :class:`Boxes` per level with ``Hi * Wi * A`` anchors, ordered by row, column, then cell
            anchor (the layout of a head output of shape (N, A * 4, Hi, Wi) permuted to (N, Hi, Wi, A, 4)).
        """
        if len(features) != self.num_features:
            raise ValueError(
                f"DefaultAnchorGenerator: got {len(features)} feature maps but was built for "
                f"{self.num_features} strides {self.strides}."
            )
        grid_sizes = [feature_map.shape[-2:] for feature_map in features]
        return [Boxes(x) for x in self._grid_anchors(grid_sizes)]


class RotatedAnchorGenerator(nn.Module):
    """Rotated anchors (x_ctr, y_ctr, w, h, angle) for rotated-box detectors (RRPN): for each size, each
    aspect ratio and each angle, at every location.

    Args:
        sizes: anchor sizes per level (or one list for all), as in :class:`DefaultAnchorGenerator`.
        aspect_ratios: height / width ratios per level (or one list for all).
        strides: stride of each feature level.
        angles: anchor angles in degrees per level (or one list for all), e.g. ``[[-90, -60, -30, 0,
            30, 60, 90]]``.
        offset: relative offset of the first anchor centre in ``[0, 1)``.
    """

    box_dim: int = 5

    def __init__(
        self,
        *,
        sizes: _Params,
        aspect_ratios: _Params,
        strides: Sequence[int],
        angles: _Params,
        offset: float = 0.5,
    ):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        angles = _broadcast_params(angles, self.num_features, "angles")
        self.cell_anchors = BufferList(
            [self.generate_cell_anchors(s, a, ang).float() for s, a, ang in zip(sizes, aspect_ratios, angles)]
        )
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"RotatedAnchorGenerator: `offset` must be in [0, 1), got {offset}.")
        self.offset = offset

    @property
    def num_cell_anchors(self) -> list[int]:
        """Alias of :attr:`num_anchors`."""
        return self.num_anchors

    @property
    def num_anchors(self) -> list[int]:
        """Number of anchors per location, for each feature level."""
        return [len(cell_anchors) for cell_anchors in self.cell_anchors]

    def generate_cell_anchors(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1, 2),
        angles: Sequence[float] = (-90, -60, -30, 0, 30, 60, 90),
    ) -> torch.Tensor:
        """Anchors centred at (0, 0), ordered size, aspect ratio, angle.

        Returns:
            Tensor[len(sizes) * len(aspect_ratios) * len(angles), 5] of (0, 0, w, h, angle).
        """
        anchors = []
        for size in sizes:
            area = size**2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.extend([0, 0, w, h, a] for a in angles)
        return torch.tensor(anchors)

    def forward(self, features: list[torch.Tensor]) -> list[RotatedBoxes]:
        """
        Args:
            features: one Tensor[N, C, Hi, Wi] per feature level.

        Returns:
            one :class:`RotatedBoxes` per level with ``Hi * Wi * A`` anchors (row, column, cell anchor).
        """
        if len(features) != self.num_features:
            raise ValueError(
                f"RotatedAnchorGenerator: got {len(features)} feature maps but was built for "
                f"{self.num_features} strides {self.strides}."
            )
        anchors = []
        for feature, stride, base_anchors in zip(features, self.strides, list(self.cell_anchors)):
            shift_x, shift_y = _create_grid_offsets(feature.shape[-2:], stride, self.offset, base_anchors)
            zeros = torch.zeros_like(shift_x)
            shifts = torch.stack((shift_x, shift_y, zeros, zeros, zeros), dim=1)
            anchors.append((shifts.view(-1, 1, 5) + base_anchors.view(1, -1, 5)).reshape(-1, 5))
        return [RotatedBoxes(x) for x in anchors]
