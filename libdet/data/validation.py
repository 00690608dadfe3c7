"""Checks of instance annotations at the data boundary, with one documented policy per problem.

:class:`AnnotationValidator` is applied by :func:`~libdet.data.datasets.load_coco_json` to every annotation
it reads, and by :class:`~libdet.data.DatasetMapper` to the annotations of every dict it maps (so dicts from
custom loaders are checked too). Errors raise :class:`~libdet.data.errors.AnnotationError` naming the file,
the image and the annotation id; "drop" cases remove the polygon / annotation and are counted in the
validator's summary, which the loader logs once per dataset file.

==========================================================  ===============================================
problem                                                     policy
==========================================================  ===============================================
``bbox`` missing, not 4 numbers (5 for ``XYWHA_ABS``)       error
``bbox`` with a NaN / infinite value                        error
negative width or height (``x1 < x0`` in XYXY modes)        error
zero width or height                                        kept, counted; removed by ``filter_empty_instances``
box entirely outside the image (size known)                 annotation dropped, counted
box partly outside the image (e.g. negative ``x``)          kept; clipped to the image by the mapper
``category_id`` not an integer, negative, or >= classes     error
polygon with an odd number of coordinates                   error
polygon with non-numeric or non-finite coordinates          error
polygon with fewer than 3 points                            polygon removed, counted (detectron2 does this)
annotation left without any polygon                         annotation dropped, counted
RLE without ``counts``/``size``, or ``size`` != image size  error
2D mask whose shape != image size                           error
``keypoints`` not ``3 * K`` numbers (K from the dataset)    error
==========================================================  ===============================================
"""

from __future__ import annotations

import collections
import logging
import numbers
from typing import Any

import numpy as np

from libdet.structures import BoxMode

from .errors import AnnotationError

__all__ = ["AnnotationValidator", "describe_annotation"]

# summary keys
DROPPED_OUTSIDE = "annotations dropped: box entirely outside the image"
DROPPED_NO_POLYGON = "annotations dropped: no polygon with at least 3 points"
REMOVED_SMALL_POLYGON = "polygons removed: fewer than 3 points"
KEPT_EMPTY_BOX = "annotations kept with an empty box (width or height 0; removed by filter_empty_instances)"


def describe_annotation(ann_id: Any, file_name: Any, source: str | None = None, index: int | None = None) -> str:
    """``"annotation id=7 of image 'a.jpg' in 'train.json'"``: the culprit named in error messages (an annotation
    without an ``id`` is named by its ``index`` in the image's list)."""
    name = f"id={ann_id!r}" if ann_id is not None or index is None else f"#{index}"
    where = f"annotation {name} of image '{file_name}'"
    return f"{where} in '{source}'" if source else where


def _numbers(value: Any, what: str, where: str) -> np.ndarray:
    """``value`` as a 1D float64 array of finite numbers, or an :class:`AnnotationError` naming ``what``."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise AnnotationError(f"{where}: {what} {value!r} is not a list of numbers.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{where}: {what} {value!r} is not a list of numbers ({e}).") from None
    if arr.ndim != 1:
        raise AnnotationError(f"{where}: {what} must be a flat list of numbers, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{where}: {what} {arr.tolist()} has a NaN or infinite value.")
    return arr


class AnnotationValidator:
    """Check instance annotations (libdet dataset-dict format) and count what was dropped.

    Args:
        source: the dataset file or name, used in messages and the summary.
        num_classes: number of classes; ``category_id`` must lie in ``[0, num_classes)`` (None: only ``>= 0``).
        num_keypoints: keypoints per instance, K; ``keypoints`` must have ``3 * K`` values (None: a multiple of 3).
    """

    def __init__(self, source: str | None = None, *, num_classes: int | None = None, num_keypoints: int | None = None):
        self.source = source
        self.num_classes = num_classes
        self.num_keypoints = num_keypoints
        self.counts: collections.Counter = collections.Counter()
        self.num_checked = 0

    def check(
        self,
        anno: dict[str, Any],
        *,
        file_name: Any,
        image_size: tuple[int, int] | None = None,
        index: int | None = None,
    ) -> bool:
        """Check one annotation; remove polygons with fewer than 3 points from it (in place).

        Args:
            anno: the annotation dict (``bbox``, ``bbox_mode``, ``category_id``, optional ``segmentation`` /
                ``keypoints``); its ``id`` (when present) names it in messages.
            file_name: the image's file name, for messages.
            image_size: ``(h, w)`` of the image when known: enables the outside-image and RLE-size checks.
            index: the annotation's position in its image's list, naming it when it has no ``id``.

        Returns:
            True to keep the annotation, False to drop it (counted in :attr:`counts`).

        Raises:
            AnnotationError: the annotation is malformed (see the module's table).
        """
        self.num_checked += 1
        where = describe_annotation(anno.get("id"), file_name, self.source, index)
        self._check_category(anno, where)
        inside, empty = self._check_box(anno, where, image_size)
        has_polygon = "segmentation" not in anno or self._check_segmentation(anno, where, image_size)
        if "keypoints" in anno:
            self._check_keypoints(anno["keypoints"], where)
        if not has_polygon:
            self.counts[DROPPED_NO_POLYGON] += 1
        elif not inside:
            self.counts[DROPPED_OUTSIDE] += 1
        elif empty:
            self.counts[KEPT_EMPTY_BOX] += 1
        return has_polygon and inside

    def _check_category(self, anno: dict[str, Any], where: str) -> None:
        if "category_id" not in anno:
            raise AnnotationError(f"{where} has no 'category_id'.")
        cid = anno["category_id"]
        if isinstance(cid, bool) or not isinstance(cid, numbers.Integral):
            raise AnnotationError(f"{where}: category_id {cid!r} is not an integer.")
        if cid < 0 or (self.num_classes is not None and cid >= self.num_classes):
            bound = f"[0, {self.num_classes})" if self.num_classes is not None else "a non-negative integer"
            raise AnnotationError(f"{where}: category_id {cid} is outside the dataset's class ids ({bound}).")

    def _check_box(self, anno: dict[str, Any], where: str, image_size: tuple[int, int] | None) -> tuple[bool, bool]:
        """``(inside, empty)``: whether the box overlaps the image (True when the size is unknown), whether it
        has a zero width or height."""
        if "bbox" not in anno or "bbox_mode" not in anno:
            raise AnnotationError(f"{where} needs 'bbox' and 'bbox_mode' (has {sorted(anno)}).")
        mode = BoxMode(anno["bbox_mode"])
        expected = 5 if mode == BoxMode.XYWHA_ABS else 4
        box = _numbers(anno["bbox"], "bbox", where)
        if len(box) != expected:
            raise AnnotationError(f"{where}: bbox {box.tolist()} has {len(box)} values; {mode.name} needs {expected}.")
        if mode in (BoxMode.XYXY_ABS, BoxMode.XYXY_REL):
            size = box[2:4] - box[0:2]
        else:
            size = box[2:4]
        if (size < 0).any():
            raise AnnotationError(
                f"{where}: bbox {box.tolist()} ({mode.name}) has a negative width or height. "
                "(Is it in another box format than its bbox_mode says?)"
            )
        inside = True
        if image_size is not None and mode in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
            x0, y0, x1, y1 = BoxMode.convert(box.tolist(), mode, BoxMode.XYXY_ABS)
            h, w = image_size
            inside = x1 > 0 and y1 > 0 and x0 < w and y0 < h
        return inside, bool((size == 0).any())

    def _check_segmentation(self, anno: dict[str, Any], where: str, image_size: tuple[int, int] | None) -> bool:
        """False when no polygon is left; RLE / mask sizes are checked against ``image_size``."""
        segm = anno["segmentation"]
        if isinstance(segm, list):
            kept = []
            for i, poly in enumerate(segm):
                coords = _numbers(poly, f"polygon {i}", where)
                if len(coords) % 2:
                    raise AnnotationError(
                        f"{where}: polygon {i} has {len(coords)} coordinates, an odd number; polygons are flat "
                        "[x0, y0, x1, y1, ...] lists."
                    )
                if len(coords) < 6:
                    self.counts[REMOVED_SMALL_POLYGON] += 1
                    continue
                kept.append(poly)
            if len(kept) != len(segm):
                anno["segmentation"] = kept
            return bool(kept)
        if isinstance(segm, dict):
            if "counts" not in segm or "size" not in segm:
                raise AnnotationError(f"{where}: RLE segmentation needs 'counts' and 'size' (has {sorted(segm)}).")
            size = segm["size"]
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise AnnotationError(f"{where}: RLE 'size' must be [height, width], got {size!r}.")
            if image_size is not None and tuple(int(s) for s in size) != tuple(image_size):
                raise AnnotationError(
                    f"{where}: RLE size [h, w]={list(size)} differs from the image's size {list(image_size)}."
                )
            return True
        if isinstance(segm, np.ndarray):
            if segm.ndim != 2:
                raise AnnotationError(f"{where}: a mask segmentation must be 2D, got shape {segm.shape}.")
            if image_size is not None and segm.shape != tuple(image_size):
                raise AnnotationError(
                    f"{where}: mask segmentation of shape {segm.shape} differs from the image's size {image_size}."
                )
            return True
        raise AnnotationError(
            f"{where}: segmentation must be a list of polygons, an RLE dict or a 2D mask; got {type(segm).__name__}."
        )

    def _check_keypoints(self, keypoints: Any, where: str) -> None:
        values = _numbers(keypoints, "keypoints", where)
        k = self.num_keypoints
        if len(values) % 3 or (k is not None and len(values) != 3 * k):
            expected = f"3 * {k} = {3 * k}" if k is not None else "a multiple of 3"
            raise AnnotationError(
                f"{where}: keypoints have {len(values)} values; expected {expected} ([x, y, visibility] per keypoint)."
            )

    def summary(self) -> str:
        """One line: how many annotations were checked and what was dropped/removed/kept for which reason."""
        src = f" of '{self.source}'" if self.source else ""
        if not self.counts:
            return f"Annotation check{src}: {self.num_checked} annotations, all valid."
        details = "; ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"Annotation check{src}: {self.num_checked} annotations; {details}."

    def log_summary(self, logger: logging.Logger) -> None:
        """Log :meth:`summary`: a warning when something was dropped or removed, else at info level."""
        dropped = any(reason != KEPT_EMPTY_BOX for reason in self.counts)
        logger.log(logging.WARNING if dropped else logging.INFO, self.summary())
