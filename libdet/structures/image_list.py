"""The :class:`ImageList`: images of different sizes padded into one batch tensor.

TorchScript can compile it (``torch.jit.script`` of code that builds one with ``ImageList(...)`` or
:meth:`ImageList.from_tensors`), so annotations are evaluated at runtime here (no ``from __future__ import
annotations``, whose string annotations TorchScript cannot always resolve).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import device as Device  # the name TorchScript resolves for the device type
from torch.nn import functional as F

__all__ = ["ImageList"]


class ImageList:
    """A batch of images of possibly different sizes, padded to one tensor.

    Attributes:
        tensor: ``(N, ..., H, W)`` padded batch (``(N, C, H, W)`` for colour images).
        image_sizes: ``(h, w)`` of each image before padding; image ``i`` is
            ``tensor[i, ..., :h, :w]``.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]):
        """
        Args:
            tensor: ``(N, ..., H, W)`` padded batch.
            image_sizes: ``N`` pairs ``(h, w)``, the size of each image before padding.
        """
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Return image ``idx`` without its padding, as a ``(..., h, w)`` view of :attr:`tensor`."""
        size = self.image_sizes[idx]
        return self.tensor[idx, ..., : size[0], : size[1]]

    @torch.jit.unused
    def to(self, *args: Any, **kwargs: Any) -> "ImageList":
        """Return an :class:`ImageList` with ``tensor.to(*args, **kwargs)``; the sizes are unchanged."""
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> Device:
        """The device of the batch tensor."""
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: list[torch.Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: dict[str, int] | None = None,
    ) -> "ImageList":
        """Pad images at the bottom and right to a common size and stack them.

        The common size is the largest height and width among the images, then (if ``square_size`` is
        set) the square ``square_size x square_size``, then rounded up to a multiple of the size
        divisibility.

        Args:
            tensors: non-empty list of ``(C, H_i, W_i)`` or ``(H_i, W_i)`` tensors; all dimensions but the last
                two must match. They may be on any device; the result is on the device of ``tensors[0]``.
            size_divisibility: if ``> 1``, pad height and width up to multiples of it (e.g. 32 for a
                backbone with stride 32).
            pad_value: value of the padding.
            padding_constraints: optional dict with ``"size_divisibility"`` (overrides the argument) and/or
                ``"square_size"`` (pad every image to this square; must be at least the largest image side).

        Returns:
            An :class:`ImageList` of ``N`` images.

        Raises:
            ValueError: for an empty list, images whose leading dimensions (e.g. channels) differ, or images
                larger than ``square_size``.
            TypeError: if ``tensors`` is not a list/tuple of tensors.
        """
        if torch.jit.is_scripting():  # TorchScript compiles only this branch
            return _from_tensors_scripted(tensors, size_divisibility, pad_value, padding_constraints)
        else:
            return _from_tensors_eager(tensors, size_divisibility, pad_value, padding_constraints)


def _from_tensors_eager(
    tensors: Sequence[torch.Tensor],
    size_divisibility: int,
    pad_value: float,
    padding_constraints: dict[str, int] | None,
) -> ImageList:
    """:meth:`ImageList.from_tensors` in eager mode and while tracing (sizes stay tensors)."""
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"ImageList.from_tensors: `tensors` must be a list or tuple, got {type(tensors)}.")
    if len(tensors) == 0:
        raise ValueError("ImageList.from_tensors: `tensors` is empty; need at least one image.")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"ImageList.from_tensors: `tensors[{i}]` is a {type(t)}, expected torch.Tensor.")
        if t.dim() < 2:
            raise ValueError(
                f"ImageList.from_tensors: `tensors[{i}]` must have shape (..., H, W), got {tuple(t.shape)}."
            )
        if t.shape[:-2] != tensors[0].shape[:-2]:
            raise ValueError(
                f"ImageList.from_tensors: `tensors[{i}]` has shape {tuple(t.shape)}, but `tensors[0]` has "
                f"{tuple(tensors[0].shape)}; all dimensions except the last two (H, W) must match."
            )

    image_sizes: list[tuple[int, int]] = [(im.shape[-2], im.shape[-1]) for im in tensors]
    # A tensor (not Python ints) so that the padded size stays symbolic while tracing.
    sizes_tensor = [_shape_to_tensor(s) for s in image_sizes]
    max_size = torch.stack(sizes_tensor).max(0).values

    if padding_constraints is not None:
        square_size = padding_constraints.get("square_size", 0)
        if square_size > 0:
            if not torch.jit.is_tracing() and int(max_size.max()) > square_size:
                raise ValueError(
                    f"ImageList.from_tensors: padding_constraints['square_size']={square_size} is smaller "
                    f"than the largest image (height, width)={tuple(max_size.tolist())}."
                )
            max_size = torch.full_like(max_size, square_size)
        if "size_divisibility" in padding_constraints:
            size_divisibility = padding_constraints["size_divisibility"]
    if size_divisibility > 1:
        stride = size_divisibility
        max_size = (max_size + (stride - 1)).div(stride, rounding_mode="floor") * stride

    if torch.jit.is_tracing():
        image_sizes = sizes_tensor  # type: ignore[assignment]

    if len(tensors) == 1:
        h, w = image_sizes[0]
        padding = [0, max_size[-1] - w, 0, max_size[-2] - h]  # (left, right, top, bottom)
        if not torch.jit.is_tracing():
            padding = [int(p) for p in padding]
        batched = F.pad(tensors[0], padding, value=pad_value).unsqueeze_(0)
    else:
        padded_hw = list(max_size) if torch.jit.is_tracing() else [int(s) for s in max_size]
        batch_shape = [len(tensors)] + list(tensors[0].shape[:-2]) + padded_hw
        batched = tensors[0].new_full(batch_shape, pad_value)
        for i, img in enumerate(tensors):
            batched[i, ..., : img.shape[-2], : img.shape[-1]].copy_(img)
    return ImageList(batched.contiguous(), image_sizes)


def _from_tensors_scripted(
    tensors: list[torch.Tensor],
    size_divisibility: int,
    pad_value: float,
    padding_constraints: dict[str, int] | None,
) -> ImageList:
    """:meth:`ImageList.from_tensors` in TorchScript: the same padding, computed with Python ints."""
    if len(tensors) == 0:
        raise ValueError("ImageList.from_tensors: `tensors` is empty; need at least one image.")
    image_sizes: list[tuple[int, int]] = []
    max_h, max_w = 0, 0
    for t in tensors:
        h, w = t.shape[-2], t.shape[-1]
        image_sizes.append((h, w))
        max_h, max_w = max(max_h, h), max(max_w, w)
    if padding_constraints is not None:
        square_size = padding_constraints.get("square_size", 0)
        if square_size > 0:
            if max(max_h, max_w) > square_size:
                raise ValueError("ImageList.from_tensors: padding_constraints['square_size'] is smaller than an image.")
            max_h, max_w = square_size, square_size
        if "size_divisibility" in padding_constraints:
            size_divisibility = padding_constraints["size_divisibility"]
    if size_divisibility > 1:
        max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
        max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
    batch_shape = [len(tensors)] + list(tensors[0].shape[:-2]) + [max_h, max_w]
    batched = tensors[0].new_full(batch_shape, pad_value)
    for i, img in enumerate(tensors):
        batched[i, ..., : img.shape[-2], : img.shape[-1]].copy_(img)
    return ImageList(batched.contiguous(), image_sizes)


def _shape_to_tensor(shape: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``(h, w)`` as a long tensor; while tracing, keeps the traced sizes instead of freezing constants."""
    if torch.jit.is_tracing():
        return torch.stack([torch.as_tensor(x) for x in shape])
    return torch.as_tensor(shape, dtype=torch.long)
