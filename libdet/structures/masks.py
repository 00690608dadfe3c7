"""Instance masks in three forms: full-image bitmaps (:class:`BitMasks`), polygons (:class:`PolygonMasks`) and
per-box low-resolution masks (:class:`ROIMasks`), plus the conversions between them."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .boxes import Boxes

__all__ = [
    "BitMasks",
    "PolygonMasks",
    "ROIMasks",
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
    "rle_to_bitmask",
]


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area of a simple polygon by the shoelace formula.

    Args:
        x: ``(K,)`` x coordinates of the vertices, in order.
        y: ``(K,)`` y coordinates of the vertices, in order.
    """
    return 0.5 * np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def polygons_to_bitmask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterize the union of polygons into a bool mask, with COCO's rasterizer (pycocotools).

    Args:
        polygons: the polygons of one instance, each a flat array ``[x0, y0, x1, y1, ...]`` of at least 3
            points, in absolute pixel coordinates.
        height: mask height.
        width: mask width.

    Returns:
        ``(height, width)`` bool array; all False when ``polygons`` is empty.

    Raises:
        ValueError: if a polygon has fewer than 6 coordinates (pycocotools would read 4 numbers as a box).
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    for j, p in enumerate(polygons):
        if len(p) < 6:
            raise ValueError(
                f"polygons_to_bitmask: `polygons[{j}]` has {len(p)} coordinates; a polygon needs at least 6 (3 points)."
            )
    from pycocotools import mask as mask_util

    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    rle = mask_util.merge(rles)
    return mask_util.decode(rle).astype(bool)


def rle_to_bitmask(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO run-length encoding into a bool mask.

    Args:
        rle: ``{"size": [height, width], "counts": ...}`` where ``counts`` is either the compressed string
            (``str`` or ``bytes``, as in COCO json for ``iscrowd`` masks and in results files) or the
            uncompressed list of run lengths (column-major, starting with a run of zeros).

    Returns:
        ``(height, width)`` bool array.

    Raises:
        ValueError: if ``rle`` lacks ``size`` or ``counts``.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(
            f"rle_to_bitmask: `rle` must be a dict with keys 'size' and 'counts', got {type(rle)} "
            f"{sorted(rle) if isinstance(rle, dict) else ''}."
        )
    from pycocotools import mask as mask_util

    height, width = (int(s) for s in rle["size"])
    if isinstance(rle["counts"], (list, tuple, np.ndarray)):
        rle = mask_util.frPyObjects({"size": [height, width], "counts": list(rle["counts"])}, height, width)
    elif isinstance(rle["counts"], str):
        rle = {"size": [height, width], "counts": rle["counts"].encode("ascii")}
    return mask_util.decode(rle).astype(bool)


def rasterize_polygons_within_box(polygons: list[np.ndarray], box: np.ndarray, mask_size: int) -> torch.Tensor:
    """Rasterize the part of polygons inside ``box`` into a ``mask_size x mask_size`` mask.

    The polygons are translated so that the box's top-left corner is the origin and scaled so that the box
    spans the mask; the result is the mask-head training target for that box.

    Args:
        polygons: the polygons of one instance, flat ``[x0, y0, ...]`` float64 arrays (image coordinates).
        box: ``(4,)`` box ``(x0, y0, x1, y1)``.
        mask_size: side of the output mask.

    Returns:
        ``(mask_size, mask_size)`` bool tensor.
    """
    w, h = box[2] - box[0], box[3] - box[1]
    polygons = copy.deepcopy(polygons)
    for p in polygons:
        p[0::2] = p[0::2] - box[0]
        p[1::2] = p[1::2] - box[1]
    ratio_w = mask_size / max(w, 0.1)
    ratio_h = mask_size / max(h, 0.1)
    for p in polygons:
        p[0::2] *= ratio_w
        p[1::2] *= ratio_h
    return torch.from_numpy(polygons_to_bitmask(polygons, mask_size, mask_size))


def _boxes_tensor(boxes: Boxes | torch.Tensor, name: str) -> torch.Tensor:
    """The ``(N, 4)`` tensor of ``boxes`` given as :class:`Boxes` or a tensor."""
    tensor = boxes.tensor if isinstance(boxes, Boxes) else boxes
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or tensor.shape[1] != 4:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
        raise ValueError(f"{name}: `boxes` must be Boxes or an (N, 4) tensor, got {shape}.")
    return tensor


class BitMasks:
    """``N`` instance masks over the whole image, stored as one ``(N, H, W)`` bool tensor.

    Selecting masks with an index tensor (``masks[idx]``) copies nothing yet: the selection keeps the source masks
    and the index, and :attr:`tensor` gathers them on first use. Training needs this: the ROI heads give each of
    the 512 sampled proposals of an image its matched object's mask, then keep the foreground ones, and
    :meth:`crop_and_resize` crops each proposal's mask straight from the few source masks, never copying
    ``(512, H, W)`` bitmaps.

    Attributes:
        tensor: bool tensor of shape ``(N, H, W)``.
        image_size: ``(H, W)``.
    """

    _source: torch.Tensor | None = None  # (M, H, W) masks a lazy selection picks from
    _index: torch.Tensor | None = None  # (N,) int64 indices into ``_source``

    def __init__(self, tensor: torch.Tensor | np.ndarray):
        """
        Args:
            tensor: ``(N, H, W)`` masks of any dtype (nonzero means foreground). Tensors keep their device.

        Raises:
            ValueError: if ``tensor`` is not 3-dimensional.
        """
        if isinstance(tensor, torch.Tensor):
            tensor = tensor.to(torch.bool)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.bool, device=torch.device("cpu"))
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks: `tensor` must have shape (N, H, W), got {tuple(tensor.shape)}.")
        self.image_size = tensor.shape[1:]
        self.tensor = tensor

    @classmethod
    def _selection(cls, source: torch.Tensor, index: torch.Tensor) -> BitMasks:
        """The masks ``source[index]``, gathered only when :attr:`tensor` is first read."""
        masks = cls.__new__(cls)
        masks.image_size = source.shape[1:]
        masks._source, masks._index = source, index
        return masks

    @property
    def tensor(self) -> torch.Tensor:
        """The ``(N, H, W)`` bool masks."""
        if self._index is not None:
            self._tensor = self._source[self._index]
            self._source = self._index = None
        return self._tensor

    @tensor.setter
    def tensor(self, value: torch.Tensor) -> None:
        self._tensor = value
        self._source = self._index = None

    def to(self, *args: Any, **kwargs: Any) -> BitMasks:
        """Return the masks moved with ``tensor.to(*args, **kwargs)`` (they stay bool)."""
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        """The device of the mask tensor."""
        return self._source.device if self._index is not None else self.tensor.device

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> BitMasks:
        """Select masks; always returns :class:`BitMasks` (an int selects a single mask).

        Args:
            item: an int, a slice, a bool mask of length N, or an index tensor/list.
        """
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        if isinstance(item, torch.Tensor) and item.dim() == 1 and not item.is_floating_point():
            return self._select(item)
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise IndexError(f"BitMasks: indexing with {item!r} returned shape {tuple(selected.shape)}, not (M, H, W).")
        return BitMasks(selected)

    def _select(self, item: torch.Tensor) -> BitMasks:
        """``self[item]`` for a 1-d bool mask or integer index tensor, as a lazy selection (see the class
        docstring); a bad index raises like tensor indexing."""
        if self._index is not None:
            source, base = self._source, self._index
        else:
            source, base = self.tensor, torch.arange(len(self.tensor), device=self.tensor.device)
        return BitMasks._selection(source, base[item.to(base.device)])

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each mask as an ``(H, W)`` bool tensor."""
        yield from self.tensor

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.tensor)})"

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else self.tensor.shape[0]

    def nonempty(self) -> torch.Tensor:
        """Return an ``(N,)`` bool mask of the masks with at least one foreground pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def area(self) -> torch.Tensor:
        """Return the ``(N,)`` float32 foreground pixel counts."""
        return self.tensor.flatten(1).sum(dim=1).to(torch.float32)

    @staticmethod
    def from_polygon_masks(polygon_masks: PolygonMasks | list[list[np.ndarray]], height: int, width: int) -> BitMasks:
        """Rasterize polygon masks into full-image bitmaps.

        Args:
            polygon_masks: :class:`PolygonMasks`, or the list of per-instance polygon lists.
            height: image height.
            width: image width.
        """
        if isinstance(polygon_masks, PolygonMasks):
            polygon_masks = polygon_masks.polygons
        masks = [torch.from_numpy(polygons_to_bitmask(p, height, width)) for p in polygon_masks]
        if len(masks) == 0:
            return BitMasks(torch.empty(0, height, width, dtype=torch.bool))
        return BitMasks(torch.stack(masks))

    @staticmethod
    def from_rle(rles: Sequence[dict[str, Any]], height: int | None = None, width: int | None = None) -> BitMasks:
        """Decode COCO run-length encodings (compressed or uncompressed) into bitmaps.

        Args:
            rles: one RLE dict per instance, ``{"size": [h, w], "counts": str | bytes | list[int]}``
                (see :func:`rle_to_bitmask`).
            height: image height; required when ``rles`` is empty, otherwise checked against each ``size``.
            width: image width; as ``height``.

        Raises:
            ValueError: if the RLE sizes disagree with each other or with ``height``/``width``, or if
                ``rles`` is empty and ``height``/``width`` are not given.
        """
        masks = [rle_to_bitmask(rle) for rle in rles]
        if len(masks) == 0:
            if height is None or width is None:
                raise ValueError("BitMasks.from_rle: `height` and `width` are required when `rles` is empty.")
            return BitMasks(torch.empty(0, height, width, dtype=torch.bool))
        expected = (height, width) if height is not None and width is not None else masks[0].shape
        for i, m in enumerate(masks):
            if m.shape != tuple(expected):
                raise ValueError(
                    f"BitMasks.from_rle: `rles[{i}]` has size {list(m.shape)}, expected {list(expected)} "
                    "(height, width)."
                )
        return BitMasks(torch.from_numpy(np.stack(masks)))

    @staticmethod
    def from_roi_masks(
        roi_masks: ROIMasks,
        height: int,
        width: int,
        *,
        boxes: Boxes | torch.Tensor,
        threshold: float = 0.5,
    ) -> BitMasks:
        """Paste per-box masks into full-image bitmaps (see :meth:`ROIMasks.to_bitmasks`).

        Args:
            roi_masks: ``N`` per-box masks.
            height: image height.
            width: image width.
            boxes: the ``N`` boxes the masks belong to, in image coordinates.
            threshold: foreground threshold on the pasted mask probabilities.
        """
        return roi_masks.to_bitmasks(boxes, height, width, threshold=threshold)

    def crop_and_resize(self, boxes: Boxes | torch.Tensor, mask_size: int) -> torch.Tensor:
        """Crop each mask to its box and resize the crop to ``mask_size x mask_size``.

        Uses ROIAlign with ``aligned=True`` (pixel ``i`` covers ``[i, i + 1)``, so box coordinates are
        continuous) and adaptive sampling, then thresholds at 0.5. This is the mask-head training target.

        Args:
            boxes: ``N`` boxes ``(x0, y0, x1, y1)``, one per mask, in image coordinates.
            mask_size: side of the output masks.

        Returns:
            ``(N, mask_size, mask_size)`` bool tensor on the masks' device.

        Raises:
            ValueError: if the number of boxes differs from the number of masks.
        """
        from torchvision.ops import roi_align

        boxes = _boxes_tensor(boxes, "BitMasks.crop_and_resize")
        if len(boxes) != len(self):
            raise ValueError(
                f"BitMasks.crop_and_resize: got {len(boxes)} boxes for {len(self)} masks; need one box per mask."
            )
        device = self.device
        if len(boxes) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        if self._index is not None and len(self._source) <= len(self._index):
            # a selection of no more masks than boxes (the ROI heads' case): box i crops source mask index[i]
            masks, batch_inds = self._source, self._index.to(torch.float32)[:, None]
        else:
            masks = self.tensor
            batch_inds = torch.arange(len(boxes), device=device, dtype=torch.float32)[:, None]
        masks = masks.to(dtype=torch.float32)[:, None, :, :]  # (M, 1, H, W)
        boxes = boxes.to(device=device, dtype=torch.float32)
        rois = torch.cat([batch_inds, boxes], dim=1)  # (N, 5): box i crops mask batch_inds[i]
        crops = roi_align(masks, rois, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
        return crops.squeeze(1) >= 0.5

    def get_bounding_boxes(self) -> Boxes:
        """Return the tight box around each mask's foreground; empty masks get the box ``(0, 0, 0, 0)``.

        A mask covering pixel columns ``x0..x1`` and rows ``y0..y1`` gets the box ``(x0, y0, x1 + 1, y1 + 1)``.
        """
        n, h, w = self.tensor.shape
        boxes = torch.zeros(n, 4, dtype=torch.float32, device=self.tensor.device)
        if n == 0 or h == 0 or w == 0:
            return Boxes(boxes)
        x_any = self.tensor.any(dim=1).to(torch.uint8)  # (N, W): columns with foreground
        y_any = self.tensor.any(dim=2).to(torch.uint8)  # (N, H): rows with foreground
        # argmax returns the first maximal index: the first foreground column (row), from either end.
        x0 = x_any.argmax(dim=1)
        x1 = w - x_any.flip(dims=[1]).argmax(dim=1)
        y0 = y_any.argmax(dim=1)
        y1 = h - y_any.flip(dims=[1]).argmax(dim=1)
        found = self.nonempty()
        coords = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
        boxes[found] = coords[found]
        return Boxes(boxes)

    @staticmethod
    def cat(bitmasks_list: Sequence[BitMasks]) -> BitMasks:
        """Concatenate a non-empty list of :class:`BitMasks` of the same image size.

        Raises:
            ValueError: for an empty list.
            TypeError: if an element is not :class:`BitMasks`.
        """
        if not isinstance(bitmasks_list, (list, tuple)) or len(bitmasks_list) == 0:
            raise ValueError("BitMasks.cat: `bitmasks_list` must be a non-empty list or tuple.")
        for i, bm in enumerate(bitmasks_list):
            if not isinstance(bm, BitMasks):
                raise TypeError(f"BitMasks.cat: `bitmasks_list[{i}]` is a {type(bm)}, expected BitMasks.")
        return type(bitmasks_list[0])(torch.cat([bm.tensor for bm in bitmasks_list], dim=0))


class PolygonMasks:
    """``N`` instance masks as polygons: for each instance, a list of polygons whose union is the mask.

    Each polygon is a flat float64 array ``[x0, y0, x1, y1, ...]`` of at least 3 points, in absolute
    image coordinates.

    Attributes:
        polygons: ``list[list[np.ndarray]]``, one list of polygons per instance.
    """

    def __init__(self, polygons: list[list[torch.Tensor | np.ndarray | list[float]]]):
        """
        Args:
            polygons: one list per instance, holding that instance's polygons as flat sequences of
                coordinates (lists, arrays or tensors).

        Raises:
            ValueError: if ``polygons`` is not a list of lists, or a polygon has an odd number of coordinates
                or fewer than 6; the message names the instance and polygon.
        """
        if not isinstance(polygons, list):
            raise ValueError(
                "PolygonMasks: `polygons` must be a list (one entry per instance) of lists of polygons, "
                f"got {type(polygons)}."
            )
        self.polygons: list[list[np.ndarray]] = [
            _process_instance_polygons(per_instance, i) for i, per_instance in enumerate(polygons)
        ]

    def to(self, *args: Any, **kwargs: Any) -> PolygonMasks:
        """Polygons live on the CPU as numpy arrays; returns ``self``."""
        return self

    @property
    def device(self) -> torch.device:
        """Always the CPU."""
        return torch.device("cpu")

    def get_bounding_boxes(self) -> Boxes:
        """Return the box spanned by each instance's polygon vertices; an instance without polygons gets zeros."""
        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for idx, per_instance in enumerate(self.polygons):
            if len(per_instance) == 0:
                continue
            coords = np.concatenate([p.reshape(-1, 2) for p in per_instance], axis=0)
            boxes[idx, :2] = torch.from_numpy(coords.min(axis=0))
            boxes[idx, 2:] = torch.from_numpy(coords.max(axis=0))
        return Boxes(boxes)

    def nonempty(self) -> torch.Tensor:
        """Return an ``(N,)`` bool mask of the instances that have at least one polygon."""
        return torch.tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def __getitem__(self, item: int | slice | list[int] | list[bool] | np.ndarray | torch.Tensor) -> PolygonMasks:
        """Select instances; always returns :class:`PolygonMasks` (sharing the polygon arrays).

        Args:
            item: an int, a slice, a list/array/tensor of indices, or a bool list/array/tensor of length N.

        Raises:
            ValueError: for a bool mask of the wrong length or an index of an unsupported dtype.
        """
        if isinstance(item, (int, np.integer)):
            return PolygonMasks([self.polygons[item]])
        if isinstance(item, slice):
            return PolygonMasks(self.polygons[item])
        if isinstance(item, torch.Tensor):
            item = item.cpu().numpy()
        if isinstance(item, (list, tuple)):
            item = np.asarray(item) if len(item) else np.zeros(0, dtype=np.int64)
        if not isinstance(item, np.ndarray):
            raise ValueError(f"PolygonMasks: unsupported index type {type(item)}.")
        if item.dtype == bool:
            if item.ndim != 1 or len(item) != len(self):
                raise ValueError(f"PolygonMasks: a bool index must have shape ({len(self)},), got {tuple(item.shape)}.")
            item = np.nonzero(item)[0]
        elif not np.issubdtype(item.dtype, np.integer):
            raise ValueError(f"PolygonMasks: unsupported index dtype {item.dtype}; use int or bool.")
        return PolygonMasks([self.polygons[i] for i in item.reshape(-1).tolist()])

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        """Yield each instance's list of polygons."""
        return iter(self.polygons)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.polygons)})"

    def __len__(self) -> int:
        return len(self.polygons)

    def crop_and_resize(self, boxes: Boxes | torch.Tensor, mask_size: int) -> torch.Tensor:
        """Rasterize each instance's polygons inside its box at ``mask_size x mask_size``.

        See :func:`rasterize_polygons_within_box`. This is the mask-head training target.

        Args:
            boxes: ``N`` boxes ``(x0, y0, x1, y1)``, one per instance.
            mask_size: side of the output masks.

        Returns:
            ``(N, mask_size, mask_size)`` bool tensor on the device of ``boxes``.

        Raises:
            ValueError: if the number of boxes differs from the number of instances.
        """
        boxes = _boxes_tensor(boxes, "PolygonMasks.crop_and_resize")
        if len(boxes) != len(self):
            raise ValueError(
                f"PolygonMasks.crop_and_resize: got {len(boxes)} boxes for {len(self)} instances; "
                "need one box per instance."
            )
        device = boxes.device
        boxes_np = boxes.detach().to(device="cpu", dtype=torch.float64).numpy()
        results = [rasterize_polygons_within_box(poly, box, mask_size) for poly, box in zip(self.polygons, boxes_np)]
        if len(results) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        return torch.stack(results, dim=0).to(device=device)

    def area(self) -> torch.Tensor:
        """Return the ``(N,)`` float32 polygon areas (shoelace), summed over each instance's polygons.

        Overlapping polygons of one instance are counted twice; use :class:`BitMasks` for exact pixel areas.
        """
        areas = [float(sum(polygon_area(p[0::2], p[1::2]) for p in per_instance)) for per_instance in self.polygons]
        return torch.tensor(areas, dtype=torch.float32)

    @staticmethod
    def cat(polymasks_list: Sequence[PolygonMasks]) -> PolygonMasks:
        """Concatenate a non-empty list of :class:`PolygonMasks`.

        Raises:
            ValueError: for an empty list.
            TypeError: if an element is not :class:`PolygonMasks`.
        """
        if not isinstance(polymasks_list, (list, tuple)) or len(polymasks_list) == 0:
            raise ValueError("PolygonMasks.cat: `polymasks_list` must be a non-empty list or tuple.")
        for i, pm in enumerate(polymasks_list):
            if not isinstance(pm, PolygonMasks):
                raise TypeError(f"PolygonMasks.cat: `polymasks_list[{i}]` is a {type(pm)}, expected PolygonMasks.")
        return type(polymasks_list[0])(list(itertools.chain.from_iterable(pm.polygons for pm in polymasks_list)))


def _process_instance_polygons(per_instance: Any, index: int) -> list[np.ndarray]:
    """Validate one instance's polygons and convert each to a flat float64 array."""
    if not isinstance(per_instance, list):
        raise ValueError(f"PolygonMasks: instance {index} must be a list of polygons, got {type(per_instance)}.")
    arrays = []
    for j, polygon in enumerate(per_instance):
        if isinstance(polygon, torch.Tensor):
            polygon = polygon.detach().cpu().numpy()
        array = np.asarray(polygon).astype(np.float64).reshape(-1)
        if len(array) % 2 != 0 or len(array) < 6:
            raise ValueError(
                f"PolygonMasks: polygon {j} of instance {index} has {len(array)} coordinates; a polygon needs "
                "an even number of coordinates, at least 6 (3 points)."
            )
        arrays.append(array)
    return arrays


class ROIMasks:
    """``N`` low-resolution masks, each defined relative to its own box (the mask head's output).

    Attributes:
        tensor: ``(N, M, M)`` mask probabilities (or logits-turned-probabilities); mask ``i`` spans box ``i``.
    """

    def __init__(self, tensor: torch.Tensor):
        """
        Args:
            tensor: ``(N, M, M)`` tensor of per-box masks.

        Raises:
            ValueError: if ``tensor`` is not 3-dimensional.
        """
        if tensor.dim() != 3:
            raise ValueError(f"ROIMasks: `tensor` must have shape (N, M, M), got {tuple(tensor.shape)}.")
        self.tensor = tensor

    def to(self, device: torch.device | str) -> ROIMasks:
        """Return the masks on ``device``."""
        return ROIMasks(self.tensor.to(device))

    @property
    def device(self) -> torch.device:
        """The device of the mask tensor."""
        return self.tensor.device

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> ROIMasks:
        """Select masks; always returns :class:`ROIMasks` (an int selects a single mask)."""
        if isinstance(item, int):
            return ROIMasks(self.tensor[item].unsqueeze(0))
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise IndexError(f"ROIMasks: indexing with {item!r} returned shape {tuple(selected.shape)}, not (K, M, M).")
        return ROIMasks(selected)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.tensor)})"

    def to_bitmasks(self, boxes: Boxes | torch.Tensor, height: int, width: int, threshold: float = 0.5) -> BitMasks:
        """Paste each mask into its box in a ``height x width`` image and threshold it.

        Uses :func:`libdet.layers.mask_ops.paste_masks_in_image`.

        Args:
            boxes: the ``N`` boxes ``(x0, y0, x1, y1)`` the masks belong to, in image coordinates.
            height: image height.
            width: image width.
            threshold: pasted values ``>= threshold`` are foreground.
        """
        # Imported here: `structures` sits below `layers` and must not import it at module level.
        from libdet.layers.mask_ops import paste_masks_in_image

        boxes = _boxes_tensor(boxes, "ROIMasks.to_bitmasks")
        if len(boxes) != len(self):
            raise ValueError(
                f"ROIMasks.to_bitmasks: got {len(boxes)} boxes for {len(self)} masks; need one box per mask."
            )
        return BitMasks(paste_masks_in_image(self.tensor, boxes, (height, width), threshold=threshold))
