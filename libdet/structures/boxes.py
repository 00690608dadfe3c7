"""Axis-aligned boxes: the :class:`BoxMode` conventions, the :class:`Boxes` container and pairwise metrics."""

# No `from __future__ import annotations` here: TorchScript compiles `Boxes` and cannot resolve string
# annotations such as "torch.device" in a class; the forward references to the classes are quoted instead.

import math
from collections.abc import Sequence
from enum import IntEnum, unique

import numpy as np
import torch

__all__ = [
    "BoxMode",
    "Boxes",
    "pairwise_intersection",
    "pairwise_iou",
    "pairwise_ioa",
    "pairwise_point_box_distance",
    "matched_pairwise_iou",
]

_RawBoxType = list[float] | tuple[float, ...] | torch.Tensor | np.ndarray


@unique
class BoxMode(IntEnum):
    """How the numbers of a box are to be read.

    Members:
        XYXY_ABS: ``(x0, y0, x1, y1)`` in absolute floating-point pixel coordinates. ``(x0, y0)`` is the
            top-left corner and ``(x1, y1)`` the bottom-right corner, so the width is ``x1 - x0``.
        XYWH_ABS: ``(x0, y0, w, h)`` in absolute pixel coordinates.
        XYXY_REL: ``(x0, y0, x1, y1)`` relative to the image size (not supported by :meth:`convert`).
        XYWH_REL: ``(x0, y0, w, h)`` relative to the image size (not supported by :meth:`convert`).
        XYWHA_ABS: ``(xc, yc, w, h, a)`` in absolute pixel coordinates; ``(xc, yc)`` is the centre and
            ``a`` the counter-clockwise rotation in degrees (see :class:`~libdet.structures.RotatedBoxes`).
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3
    XYWHA_ABS = 4

    @staticmethod
    def convert(box: _RawBoxType, from_mode: "BoxMode", to_mode: "BoxMode") -> _RawBoxType:
        """Convert one box or a batch of boxes from ``from_mode`` to ``to_mode``.

        Supported: ``XYXY_ABS <-> XYWH_ABS``, ``XYWH_ABS/XYXY_ABS -> XYWHA_ABS`` (angle 0),
        ``XYWHA_ABS -> XYXY_ABS/XYWH_ABS`` (the axis-aligned bounding box of the rotated box).

        Args:
            box: a list/tuple of 4 or 5 numbers (one box), or an ``np.ndarray``/``torch.Tensor`` of shape
                ``(k,)`` or ``(N, k)`` with ``k`` 4 or 5.
            from_mode: the mode ``box`` is in.
            to_mode: the mode to convert to.

        Returns:
            The converted box(es), of the same type as ``box`` (a tuple stays a tuple, an array an array).
            The input is never modified.

        Raises:
            NotImplementedError: for the relative modes, or a pair of modes that has no conversion.
            ValueError: if ``box`` does not have 4 or 5 numbers per box as the modes require.
        """
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        relative = (BoxMode.XYXY_REL, BoxMode.XYWH_REL)
        if from_mode in relative or to_mode in relative:
            raise NotImplementedError(
                f"BoxMode.convert: relative modes are not supported (from_mode={from_mode.name}, "
                f"to_mode={to_mode.name}); multiply by the image size to get an absolute mode first."
            )

        original_type = type(box)
        single_list = isinstance(box, (list, tuple))
        is_numpy = isinstance(box, np.ndarray)
        if single_list:
            if len(box) not in (4, 5):
                raise ValueError(
                    f"BoxMode.convert: a list/tuple `box` must hold one box of 4 or 5 numbers, got {len(box)} numbers."
                )
            arr = torch.tensor(box)[None, :]
        elif is_numpy:
            arr = torch.from_numpy(np.asarray(box)).clone()
        elif isinstance(box, torch.Tensor):
            arr = box.clone()
        else:
            raise TypeError(
                f"BoxMode.convert: `box` must be a list, tuple, np.ndarray or torch.Tensor, got {original_type}."
            )
        one_dim = arr.dim() == 1
        if one_dim:
            arr = arr[None, :]
        if arr.dim() != 2:
            raise ValueError(f"BoxMode.convert: `box` must have shape (k,) or (N, k), got {tuple(arr.shape)}.")
        expected = 5 if from_mode == BoxMode.XYWHA_ABS else 4
        if arr.shape[-1] != expected:
            raise ValueError(
                f"BoxMode.convert: boxes in {from_mode.name} have {expected} numbers each, "
                f"got shape {tuple(arr.shape)}."
            )

        arr = _convert_abs(arr, from_mode, to_mode)

        if single_list:
            return original_type(arr.flatten().tolist())
        if one_dim:
            arr = arr[0]
        if is_numpy:
            return arr.numpy()
        return arr


def _convert_abs(arr: torch.Tensor, from_mode: BoxMode, to_mode: BoxMode) -> torch.Tensor:
    """Convert an ``(N, k)`` tensor between two absolute modes; ``arr`` may be modified in place."""
    if from_mode == BoxMode.XYWHA_ABS:
        arr = _xywha_to_xyxy(arr)
        return _convert_abs(arr, BoxMode.XYXY_ABS, to_mode) if to_mode != BoxMode.XYXY_ABS else arr
    if to_mode == BoxMode.XYWHA_ABS:
        if from_mode == BoxMode.XYXY_ABS:
            arr = _convert_abs(arr, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        original_dtype = arr.dtype
        arr = arr.double()
        arr[:, 0] += arr[:, 2] / 2.0
        arr[:, 1] += arr[:, 3] / 2.0
        angles = torch.zeros((arr.shape[0], 1), dtype=arr.dtype, device=arr.device)
        return torch.cat((arr, angles), dim=1).to(dtype=original_dtype)
    if from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYXY_ABS:
        arr[:, 2] += arr[:, 0]
        arr[:, 3] += arr[:, 1]
        return arr
    if from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWH_ABS:
        arr[:, 2] -= arr[:, 0]
        arr[:, 3] -= arr[:, 1]
        return arr
    raise NotImplementedError(f"BoxMode.convert: no conversion from {from_mode.name} to {to_mode.name}.")


def _xywha_to_xyxy(arr: torch.Tensor) -> torch.Tensor:
    """Axis-aligned bounding boxes ``(N, 4)`` of rotated boxes ``(N, 5)``, computed in float64."""
    original_dtype = arr.dtype
    arr = arr.double()
    w, h, angle = arr[:, 2], arr[:, 3], arr[:, 4] * (math.pi / 180.0)
    c, s = torch.cos(angle).abs(), torch.sin(angle).abs()
    # The rotated rectangle projects onto the x axis with length |cos|*w + |sin|*h, and onto y likewise.
    new_w = c * w + s * h
    new_h = c * h + s * w
    x0 = arr[:, 0] - new_w / 2.0
    y0 = arr[:, 1] - new_h / 2.0
    return torch.stack([x0, y0, x0 + new_w, y0 + new_h], dim=1).to(dtype=original_dtype)


class Boxes:
    """A list of ``N`` axis-aligned boxes in ``XYXY_ABS`` mode, stored as one ``(N, 4)`` float32 tensor.

    Supports the common box operations (area, clip, nonempty, ...) and behaves like a tensor for
    ``len``, indexing and ``.to(device)``.

    Attributes:
        tensor: float32 tensor of shape ``(N, 4)``.
    """

    def __init__(self, tensor: torch.Tensor):
        """
        Args:
            tensor: an ``(N, 4)`` tensor, array or nested list of ``(x0, y0, x1, y1)`` boxes (annotated as a
                tensor, the only input of TorchScript-compiled code). Any input with no elements (e.g. ``[]``)
                gives an empty ``(0, 4)`` tensor. Tensors keep their device and are cast to float32.

        Raises:
            ValueError: if ``tensor`` is not of shape ``(N, 4)``.
        """
        if isinstance(tensor, torch.Tensor):
            tensor = tensor.to(torch.float32)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.float32, device=torch.device("cpu"))
        dim = self._box_dim()
        if tensor.numel() == 0:
            # Handles `Boxes([])` and other empty inputs without losing the (N, 4) shape contract.
            tensor = tensor.reshape((-1, dim)).to(dtype=torch.float32)
        if tensor.dim() != 2 or tensor.size(-1) != dim:
            raise ValueError(self._shape_error(tensor))
        self.tensor = tensor

    # TorchScript compiles Boxes (scripted models pass them around): it has no class attributes nor
    # `type(self)`, so the subclass-specific parts are the two methods below, which RotatedBoxes overrides.
    def _box_dim(self) -> int:
        """Numbers per box."""
        return 4

    def _new(self, tensor: torch.Tensor) -> "Boxes":
        """Boxes of this class holding ``tensor`` (users' subclasses keep their class in eager code)."""
        if torch.jit.is_scripting():  # constant in TorchScript: the eager branch is not compiled
            return Boxes(tensor)
        return type(self)(tensor)

    @torch.jit.unused
    def _shape_error(self, tensor) -> str:
        return f"{type(self).__name__}: `tensor` must have shape (N, {self._box_dim()}), got {tuple(tensor.shape)}."

    def clone(self) -> "Boxes":
        """Return a copy that owns a cloned tensor."""
        return self._new(self.tensor.clone())

    def to(self, device: torch.device) -> "Boxes":
        """Return the boxes on ``device`` (a ``torch.device`` or a string; the tensor stays float32)."""
        return self._new(self.tensor.to(device=device))

    def area(self) -> torch.Tensor:
        """Return the ``(N,)`` areas ``(x1 - x0) * (y1 - y0)``."""
        box = self.tensor
        return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])

    def clip(self, box_size: tuple[int, int]) -> None:
        """Clip the boxes in place to ``[0, width] x [0, height]``.

        Args:
            box_size: ``(height, width)`` to clip to.

        Raises:
            ValueError: if a coordinate is infinite or NaN.
        """
        if not torch.isfinite(self.tensor).all():
            raise ValueError("Boxes.clip: the box tensor contains infinite or NaN values.")
        h, w = box_size
        x0 = self.tensor[:, 0].clamp(min=0, max=w)
        y0 = self.tensor[:, 1].clamp(min=0, max=h)
        x1 = self.tensor[:, 2].clamp(min=0, max=w)
        y1 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x0, y0, x1, y1), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Return an ``(N,)`` bool mask of the boxes whose width and height are both ``> threshold``."""
        box = self.tensor
        widths = box[:, 2] - box[:, 0]
        heights = box[:, 3] - box[:, 1]
        return (widths > threshold) & (heights > threshold)

    def __getitem__(self, item: torch.Tensor) -> "Boxes":
        """Select boxes; always returns a :class:`Boxes` (an int selects a single box).

        Args:
            item: an int, a slice, a bool mask of length N, or an index tensor/list (annotated as a tensor,
                the index TorchScript-compiled code may use).

        Returns:
            New boxes that may share storage with these (as tensor indexing does).
        """
        if isinstance(item, int):
            return self._new(self.tensor[item].view(1, -1))
        selected = self.tensor[item]
        if selected.dim() != 2:
            raise IndexError(self._index_error(item))
        return self._new(selected)

    @torch.jit.unused
    def _index_error(self, item) -> str:
        return f"{type(self).__name__}: indexing with {item!r} did not return an (M, {self._box_dim()}) matrix."

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @torch.jit.unused
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tensor})"

    def inside_box(self, box_size: tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Return an ``(N,)`` bool mask of the boxes that lie inside the image.

        Args:
            box_size: ``(height, width)`` of the image.
            boundary_threshold: boxes may extend this many pixels beyond the image and still count as inside.
        """
        height, width = box_size
        box = self.tensor
        return (
            (box[..., 0] >= -boundary_threshold)
            & (box[..., 1] >= -boundary_threshold)
            & (box[..., 2] < width + boundary_threshold)
            & (box[..., 3] < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Return the ``(N, 2)`` box centres ``(x, y)``."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale the boxes in place: x coordinates by ``scale_x``, y coordinates by ``scale_y``."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    @torch.jit.unused  # TorchScript: concatenate the tensors, `Boxes(torch.cat([b.tensor for b in boxes_list]))`
    def cat(cls, boxes_list: Sequence["Boxes"]) -> "Boxes":
        """Concatenate a list of boxes of this class into one; an empty list gives empty boxes.

        Raises:
            TypeError: if ``boxes_list`` is not a list/tuple of boxes of this class.
        """
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"{cls.__name__}.cat: `boxes_list` must be a list or tuple, got {type(boxes_list)}.")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        for i, b in enumerate(boxes_list):
            if type(b) is not cls:
                raise TypeError(f"{cls.__name__}.cat: `boxes_list[{i}]` is a {type(b)}, expected {cls.__name__}.")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    @property
    def device(self) -> torch.device:
        """The device of the box tensor."""
        return self.tensor.device

    @torch.jit.unused
    def __iter__(self):  # -> Iterator[torch.Tensor] (TorchScript reads annotations even of unused methods)
        """Yield each box as a 1-D tensor (4 numbers; 5 for rotated boxes)."""
        yield from self.tensor


def _require_axis_aligned(caller: str, **named_boxes: Boxes) -> None:
    """Axis-aligned box functions refuse ``RotatedBoxes`` (a ``Boxes`` subclass) with a pointer to theirs."""
    for name, boxes in named_boxes.items():
        if boxes.tensor.shape[-1] != 4:
            raise TypeError(
                f"{caller}: `{name}` holds {type(boxes).__name__} with {boxes.tensor.shape[-1]} numbers per box; "
                "this function takes axis-aligned Boxes (use pairwise_iou_rotated for rotated boxes)."
            )


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection area of every pair of boxes.

    Args:
        boxes1: ``N`` boxes.
        boxes2: ``M`` boxes.

    Returns:
        ``(N, M)`` tensor of intersection areas.
    """
    _require_axis_aligned("pairwise_intersection", boxes1=boxes1, boxes2=boxes2)
    b1, b2 = boxes1.tensor, boxes2.tensor
    width_height = torch.min(b1[:, None, 2:], b2[:, 2:]) - torch.max(b1[:, None, :2], b2[:, :2])  # (N, M, 2)
    width_height.clamp_(min=0)
    return width_height.prod(dim=2)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection-over-union of every pair of boxes; pairs that do not overlap get 0.

    Args:
        boxes1: ``N`` boxes.
        boxes2: ``M`` boxes.

    Returns:
        ``(N, M)`` tensor of IoU values.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    area1 = boxes1.area()  # (N,)
    area2 = boxes2.area()  # (M,)
    zero = torch.zeros(1, dtype=inter.dtype, device=inter.device)
    return torch.where(inter > 0, inter / (area1[:, None] + area2 - inter), zero)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection-over-area of ``boxes2`` for every pair of boxes; pairs that do not overlap get 0.

    Args:
        boxes1: ``N`` boxes.
        boxes2: ``M`` boxes; their areas are the denominators.

    Returns:
        ``(N, M)`` tensor of IoA values.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    area2 = boxes2.area()  # (M,)
    zero = torch.zeros(1, dtype=inter.dtype, device=inter.device)
    return torch.where(inter > 0, inter / area2, zero)


def pairwise_point_box_distance(points: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Distances from every point to the four sides of every box.

    Args:
        points: ``(N, 2)`` points ``(x, y)``.
        boxes: ``M`` boxes.

    Returns:
        ``(N, M, 4)`` tensor of ``(left, top, right, bottom)`` distances: ``x - x0, y - y0, x1 - x, y1 - y``.
        All four are positive exactly when the point lies strictly inside the box.
    """
    _require_axis_aligned("pairwise_point_box_distance", boxes=boxes)
    x, y = points.unsqueeze(dim=2).unbind(dim=1)  # (N, 1) each
    x0, y0, x1, y1 = boxes.tensor.unsqueeze(dim=0).unbind(dim=2)  # (1, M) each
    return torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of corresponding boxes: ``boxes1[i]`` with ``boxes2[i]``; pairs that do not overlap get 0.

    Args:
        boxes1: ``N`` boxes.
        boxes2: ``N`` boxes.

    Returns:
        ``(N,)`` tensor of IoU values.

    Raises:
        ValueError: if the two lists have different lengths.
    """
    if len(boxes1) != len(boxes2):
        raise ValueError(
            "matched_pairwise_iou: `boxes1` and `boxes2` must have the same number of boxes, "
            f"got {len(boxes1)} and {len(boxes2)}."
        )
    _require_axis_aligned("matched_pairwise_iou", boxes1=boxes1, boxes2=boxes2)
    area1, area2 = boxes1.area(), boxes2.area()
    b1, b2 = boxes1.tensor, boxes2.tensor
    lt = torch.max(b1[:, :2], b2[:, :2])
    rb = torch.min(b1[:, 2:], b2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    zero = torch.zeros(1, dtype=inter.dtype, device=inter.device)
    return torch.where(inter > 0, inter / (area1 + area2 - inter), zero)
