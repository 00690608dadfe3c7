"""A fast COCO evaluator: pycocotools' ``COCOeval`` with ``evaluate()`` and ``accumulate()`` in C++.

:class:`COCOeval_opt` is a drop-in subclass of ``pycocotools.cocoeval.COCOeval``. Its ``evaluate()``
flattens the ``COCO`` objects into arrays (per-annotation fields, grouped by category and image) and runs
the compiled op ``libdet::coco_eval_evaluate`` (``csrc/coco_eval/``), which computes box IoU, mask IoU
(polygons rasterised exactly like pycocotools, RLEs decoded) or OKS and matches detections to ground
truth; ``accumulate()`` runs ``libdet::coco_eval_accumulate``. Both use ``at::parallel_for`` (so
``torch.set_num_threads`` applies). The inherited ``summarize()`` then works unchanged.

``eval["precision"]``, ``eval["recall"]``, ``eval["scores"]``, ``stats`` and ``params`` equal pycocotools'
bit for bit for ``iouType`` "bbox" and "segm". For "keypoints" the OKS uses the C library's ``exp``,
which can differ from numpy's by one ulp; the results are still identical unless an OKS falls within one
ulp of an IoU threshold.

Differences from pycocotools, by design:
    * ``evalImgs`` and ``ious`` are not materialised by the native path (they stay empty): the
      per-image results live in compact tensors that ``accumulate()`` reads.
    * ``evaluate()`` does not rewrite the annotations of the ``COCO`` objects (pycocotools replaces
      each ``segmentation`` by its RLE and sets ``ignore`` on every ground truth).
    * Bad input raises ``ValueError`` naming the annotation and image: malformed RLEs (counts not
      summing to height * width, undecodable strings, a size other than the image's), detections with
      a non-finite score, box or keypoint, keypoint lists whose length is not ``3 * len(kpt_oks_sigmas)``.
    * Messages go to the ``libdet.evaluation.fast_eval_api`` logger instead of stdout.

Detections can also come as arrays, without a ``COCO`` object of results (``loadRes`` and its index are the
largest cost around the kernel for many results)::

    COCOeval_opt(coco_gt, None, "segm", detections=detection_arrays(results, "segm"), gt_cache={})

:func:`detection_arrays` reads bbox results and compressed-RLE segm results as ``loadRes`` would (areas
included, or for segm left to the native evaluator, which measures the masks as it decodes them);
``gt_cache`` keeps the flattened ground truth for the next evaluation with the same parameters.

When the op cannot be compiled or loaded, ``COCOeval_opt`` warns once and runs pycocotools' own
``evaluate``/``accumulate`` (with ``detections=`` it raises instead: pass ``cocoDt``).
"""

from __future__ import annotations

import copy
import datetime
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval

from libdet.utils.compiled_ops import libdet_csrc, ops_status, register_op

__all__ = [
    "COCOeval_opt",
    "DetectionArrays",
    "detection_arrays",
    "detection_arrays_by_type",
    "native_coco_eval_available",
]

logger = logging.getLogger(__name__)

_IOU_TYPES = {"bbox": 0, "segm": 1, "keypoints": 2}  # csrc/coco_eval/coco_eval.h kCocoIou*
_MASK_POLYGONS, _MASK_COMPRESSED, _MASK_UNCOMPRESSED = 0, 1, 2
_fallback_warned = False


#: The compiled op (``csrc/coco_eval``): host-only, and its fallback is pycocotools' own COCOeval. It must
#: reproduce pycocotools' float64 arithmetic bit for bit, so it forbids contracting a*b+c into one fused
#: multiply-add (the default of gcc/clang where the target has FMA).
COCO_EVAL_OP = register_op(
    "coco_eval",
    sources=libdet_csrc("coco_eval"),
    schemas={
        "coco_eval_decode_masks": "coco_eval_decode_masks(Tensor[] masks) -> (Tensor, Tensor)",
        "coco_eval_evaluate": "coco_eval_evaluate(int iou_type, Tensor gt_rows, Tensor gt_offsets, "
        "Tensor dt_rows, Tensor dt_offsets, Tensor gt_ids, Tensor gt_areas, Tensor gt_crowd, Tensor gt_ignore, "
        "Tensor dt_ids, Tensor dt_areas, Tensor dt_scores, Tensor gt_geometry, Tensor dt_geometry, "
        "Tensor[] gt_masks, Tensor[] dt_masks, Tensor kpt_sigmas, Tensor iou_thrs, Tensor area_rngs, int max_det, "
        "bool match) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        "coco_eval_accumulate": "coco_eval_accumulate(Tensor eval_offsets, Tensor scores, Tensor flags, "
        "Tensor num_gt, Tensor present, int num_images, Tensor cat_list, Tensor area_list, Tensor max_dets, "
        "Tensor img_list, Tensor rec_thrs, int num_cats, int num_areas, int num_max_dets) -> (Tensor, Tensor, Tensor)",
    },
    extra_cflags=["-ffp-contract=off"],
    cuda=False,
    fallback="pycocotools' Python COCOeval",
)


def native_coco_eval_available() -> bool:
    """Whether the compiled ``coco_eval`` op is usable (compiles it on the first call; see
    :mod:`libdet.utils.compiled_ops`). False when it is disabled by ``LIBDET_DISABLE_OPS`` or failed to build."""
    return COCO_EVAL_OP.load()


def _warn_fallback() -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        logger.warning(
            "COCOeval_opt: the compiled coco_eval op is unavailable (%s); using pycocotools' COCOeval instead.",
            ops_status().get("coco_eval", "unknown"),
        )


@dataclass(frozen=True)
class DetectionArrays:
    """The detections of one task as arrays, read by :class:`COCOeval_opt` instead of a ``COCO`` of results.

    Row ``r`` is the ``r``-th result of ``cocoGt.loadRes(results)`` (annotation id ``r + 1``).

    Attributes:
        image_ids: [N] image ids (values of the ground truth's image ids).
        category_ids: [N] category ids.
        scores: float64 [N].
        areas: float64 [N], as ``loadRes`` computes them (box ``w * h``, or the mask area for segm); None
            (segm only): the native evaluator measures the masks while decoding them (the same values).
        boxes: float64 [N, 4] XYWH ("bbox"), else None.
        rle_counts: [N] compressed RLE strings ("segm"), else None.
        rle_sizes: int64 [N, 2] (height, width) of the RLEs ("segm"), else None.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    scores: np.ndarray
    areas: np.ndarray | None
    boxes: np.ndarray | None = None
    rle_counts: Sequence[str] | None = None
    rle_sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


def _loose_array(values: list) -> np.ndarray:
    """``values`` as an array: int64 when they are all integers, else an object array (hashable ids of any kind)."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1 or array.dtype.kind not in "iu":
        array = np.empty(len(values), dtype=object)
        array[:] = values
    return array.astype(np.int64, copy=False) if array.dtype.kind in "iu" else array


def detection_arrays(results: list[dict], iou_type: str, *, mask_areas: bool = True) -> DetectionArrays | None:
    """What ``coco_gt.loadRes(results)`` would hold for ``iou_type``, as arrays (``loadRes``' areas included).

    Returns None where the results are of a kind that only ``loadRes`` handles (keypoints, polygons or
    uncompressed RLEs, a "bbox" that is not 4 numbers, a missing or non-numeric score, ...): use
    ``loadRes`` and a ``COCO`` object for those. "segm" results are read without their "bbox" (the mask area
    is used, as ``COCOEvaluator`` does); for "bbox", ``loadRes`` decides by the first result, so a result
    list whose first entry has no "bbox" returns None too. ``mask_areas=False`` leaves the segm areas to the
    native evaluator (``areas`` None), which measures each mask while decoding it anyway.
    """
    return detection_arrays_by_type(results, (iou_type,), mask_areas=mask_areas)[iou_type]


def detection_arrays_by_type(
    results: list[dict], iou_types: Sequence[str], *, mask_areas: bool = True
) -> dict[str, DetectionArrays | None]:
    """``{t: detection_arrays(results, t, mask_areas=mask_areas)}`` for each of ``iou_types``; the columns the
    types share (image ids, category ids, scores) are read once and shared by the returned arrays."""
    arrays: dict[str, DetectionArrays | None] = dict.fromkeys(iou_types)
    n = len(results)
    wanted = [t for t in arrays if t in ("bbox", "segm")]
    if n == 0 or not wanted:
        return arrays
    try:
        image_ids = _loose_array(list(map(itemgetter("image_id"), results)))
        category_ids = _loose_array(list(map(itemgetter("category_id"), results)))
        scores = np.asarray(list(map(itemgetter("score"), results)), dtype=np.float64).reshape(n)
    except (KeyError, TypeError, ValueError, OverflowError):
        return arrays
    for iou_type in wanted:
        reader = _bbox_arrays if iou_type == "bbox" else _segm_arrays
        try:
            arrays[iou_type] = reader(results, image_ids, category_ids, scores, mask_areas)
        except (KeyError, TypeError, ValueError, OverflowError):
            pass
    return arrays


def _bbox_arrays(
    results: list[dict], image_ids: np.ndarray, category_ids: np.ndarray, scores: np.ndarray, mask_areas: bool
) -> DetectionArrays:
    boxes = np.asarray(list(map(itemgetter("bbox"), results)), dtype=np.float64).reshape(len(results), 4)
    # loadRes: area = w * h in float64 (the same products as numpy's)
    return DetectionArrays(image_ids, category_ids, scores, boxes[:, 2] * boxes[:, 3], boxes=boxes)


def _segm_arrays(
    results: list[dict], image_ids: np.ndarray, category_ids: np.ndarray, scores: np.ndarray, mask_areas: bool
) -> DetectionArrays | None:
    n = len(results)
    segmentations = list(map(itemgetter("segmentation"), results))
    if set(map(type, segmentations)) != {dict}:  # type checks through map(): one C loop each
        return None
    counts = list(map(itemgetter("counts"), segmentations))
    if set(map(type, counts)) != {str}:
        return None
    sizes = np.asarray(list(map(itemgetter("size"), segmentations)), dtype=np.int64).reshape(n, 2)
    areas = None
    if mask_areas:
        from pycocotools import mask as mask_util

        try:  # pycocotools' area() overflows (a uint8 shape array) past 255 masks a call
            areas = np.concatenate([mask_util.area(segmentations[i : i + 255]) for i in range(0, n, 255)])
        except Exception:  # an undecodable string: the COCO path names it
            return None
        areas = areas.astype(np.uint32, copy=False).astype(np.float64)
    return DetectionArrays(image_ids, category_ids, scores, areas, rle_counts=counts, rle_sizes=sizes)


def _positions(values: np.ndarray, table: Sequence) -> np.ndarray:
    """Index of each of ``values`` in the sorted unique ``table`` (-1 where absent), int64 [N]."""
    keys = np.asarray(table) if len(table) else np.zeros(0, dtype=np.int64)
    if values.dtype.kind in "iu" and keys.dtype.kind in "iu" and keys.ndim == 1:
        found = np.searchsorted(keys, values).clip(max=max(len(keys) - 1, 0))
        if len(keys) == 0:
            return np.full(len(values), -1, dtype=np.int64)
        return np.where(keys[found] == values, found, -1).astype(np.int64)
    index = {key: k for k, key in enumerate(table)}
    return np.fromiter((index.get(v, -1) for v in values.tolist()), dtype=np.int64, count=len(values))


def _image_sizes(coco: Any, img_ids: Sequence) -> np.ndarray:
    """(height, width) of each of ``img_ids`` in ``coco.imgs``, int64 [I, 2]; -1 where unknown."""
    sizes = np.full((len(img_ids), 2), -1, dtype=np.int64)
    for i, img_id in enumerate(img_ids):
        image = coco.imgs.get(img_id) or {}
        sizes[i] = image.get("height", -1), image.get("width", -1)
    return sizes


def _describe(ann: dict) -> str:
    return f"annotation id {ann.get('id')!r} (image id {ann.get('image_id')!r}, category id {ann.get('category_id')!r})"


def _column(
    anns: list[dict], key: str, dtype: Any, side: str, default: Any = None, width: int | None = None
) -> np.ndarray:
    """``anns[i][key]`` as an array of ``dtype``, shape [N] or [N, width]; errors name the bad annotation."""
    getter = itemgetter(key) if default is None else (lambda a: a.get(key, default))
    shape = (len(anns),) if width is None else (len(anns), width)
    try:
        values = np.asarray(list(map(getter, anns)), dtype=dtype)
        if values.shape != shape:
            raise ValueError(f"shape {values.shape} instead of {shape}")
        return values
    except (KeyError, TypeError, ValueError) as error:
        for ann in anns:  # the slow search runs only to name the culprit
            try:
                value = np.asarray(getter(ann), dtype=dtype)
                if value.shape != shape[1:]:
                    raise ValueError(f"expected {width} values, got shape {value.shape}")
            except (KeyError, TypeError, ValueError) as bad:
                raise ValueError(f"COCOeval_opt: {side} {_describe(ann)} has no valid {key!r}: {bad!r}") from error
        raise ValueError(f"COCOeval_opt: {side} annotations have invalid {key!r}: {error}") from error


def _check_finite(values: np.ndarray, anns: list[dict], what: str) -> None:
    finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)
    if not finite.all():
        ann = anns[int(np.flatnonzero(~finite)[0])]
        raise ValueError(
            f"COCOeval_opt: detection of image id {ann.get('image_id')!r}, category id {ann.get('category_id')!r} "
            f"(annotation id {ann.get('id')!r}) has a non-finite {what}"
        )


def _group(
    coco: Any, img_ids: Sequence, cat_ids: Sequence, use_cats: bool
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The annotations pycocotools evaluates, grouped as its ``evaluateImg`` sees them.

    Returns (annotations, rows, offsets): group ``k0 * len(img_ids) + i`` (a single category when
    ``use_cats`` is false) holds ``annotations[rows[offsets[g]:offsets[g + 1]]]`` in pycocotools' order:
    annotation order within an image (``getAnnIds``), and with ``use_cats`` false, by position of the
    category in ``cat_ids`` first.
    """
    num_images = len(img_ids)
    anns: list[dict] = []
    per_image = np.zeros(num_images, dtype=np.int64)
    index = coco.imgToAnns
    for i, img_id in enumerate(img_ids):
        found = index.get(img_id)
        if found:
            anns.extend(found)
            per_image[i] = len(found)
    img_index = np.repeat(np.arange(num_images, dtype=np.int64), per_image)
    categories = list(map(itemgetter("category_id"), anns))
    positions: dict[Any, list[int]] = {}
    for position, cat in enumerate(cat_ids):
        positions.setdefault(cat, []).append(position)
    if use_cats or all(len(p) == 1 for p in positions.values()):
        first = {cat: p[0] for cat, p in positions.items()}
        cat_pos = np.fromiter((first.get(c, -1) for c in categories), dtype=np.int64, count=len(anns))
        keep = np.flatnonzero(cat_pos >= 0)
        ann_rows, cat_pos, img_index = keep, cat_pos[keep], img_index[keep]
    else:  # useCats=0 with a category listed twice: pycocotools then sees its annotations twice
        pairs = [(r, p) for r, c in enumerate(categories) for p in positions.get(c, ())]
        ann_rows = np.asarray([r for r, _ in pairs], dtype=np.int64)
        cat_pos = np.asarray([p for _, p in pairs], dtype=np.int64)
        img_index = img_index[ann_rows] if len(pairs) else np.zeros(0, dtype=np.int64)
    # Keep only annotations that are used, renumbered.
    used, rows = np.unique(ann_rows, return_inverse=True)
    anns = [anns[r] for r in used.tolist()]
    if use_cats:
        group, secondary = cat_pos * num_images + img_index, np.zeros_like(cat_pos)
        num_groups = len(cat_ids) * num_images
    else:
        group, secondary = img_index, cat_pos
        num_groups = num_images
    order = np.lexsort((secondary, group))  # stable: annotation order within equal keys
    counts = np.bincount(group, minlength=num_groups) if len(group) else np.zeros(num_groups, dtype=np.int64)
    offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return anns, rows[order].astype(np.int64), offsets


def _image_ids_for_messages(anns: list[dict]) -> np.ndarray:
    """Integer image ids of ``anns`` (-1 where an id is not an integer), for the kernel's error messages."""
    values = list(map(itemgetter("image_id"), anns))
    try:
        return np.asarray(values, dtype=np.int64).reshape(len(anns))
    except (TypeError, ValueError, OverflowError):
        return np.asarray([v if isinstance(v, (int, np.integer)) else -1 for v in values], dtype=np.int64)


def _mask_sources(anns: list[dict], coco: Any, side: str, ids: np.ndarray | None = None) -> list[torch.Tensor]:
    """The 5 mask tensors of ``csrc/coco_eval/coco_eval.h`` for ``anns`` (pycocotools' ``annToRLE`` input).

    Args:
        anns: annotations with a ``segmentation``.
        coco: their ``COCO`` object (image sizes).
        side: "ground-truth" or "detection", for error messages.
        ids: the annotations' ids as int64 [N], if already extracted.
    """
    n = len(anns)
    meta = np.zeros((n, 7), dtype=np.int64)
    meta[:, 5] = ids if ids is not None else _column(anns, "id", np.int64, side)
    meta[:, 6] = _image_ids_for_messages(anns)
    segs = [a.get("segmentation") for a in anns]
    counts_list = [s.get("counts") if type(s) is dict else None for s in segs]
    if n and all(type(c) is str for c in counts_list):  # the usual detections: compressed RLE strings
        data = _ascii("".join(counts_list), anns, counts_list, side)
        lengths = np.fromiter(map(len, counts_list), dtype=np.int64, count=n)
        meta[:, 0] = _MASK_COMPRESSED
        np.cumsum(lengths, out=meta[:, 4])
        meta[:, 3] = meta[:, 4] - lengths
        sizes = _column(segs, "size", np.int64, side, width=2)
        meta[:, 1:3] = sizes
        _check_mask_sizes(anns, coco, sizes, np.ones(n, dtype=bool), side)
        empty_f, empty_i = np.zeros(0, dtype=np.float64), np.zeros(1, dtype=np.int64)
        return [
            torch.from_numpy(meta),
            torch.from_numpy(empty_f),
            torch.from_numpy(empty_i),
            torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()),
            torch.from_numpy(np.zeros(0, dtype=np.int64)),
        ]

    polygons: list[list] = []
    chunks: list[bytes] = []
    raw: list[list] = []
    num_bytes = num_raw = 0
    is_rle = np.zeros(n, dtype=bool)
    for r, (ann, seg) in enumerate(zip(anns, segs)):
        if type(seg) is list and seg and all(type(p) is list and len(p) >= 2 for p in seg) and len(seg[0]) > 4:
            image = coco.imgs.get(ann.get("image_id"))
            if image is None or "height" not in image or "width" not in image:
                raise ValueError(
                    f"COCOeval_opt: {side} {_describe(ann)} has a polygon segmentation but its image has no "
                    "height/width"
                )
            meta[r, :5] = (_MASK_POLYGONS, image["height"], image["width"], len(polygons), len(polygons) + len(seg))
            polygons.extend(seg)
            continue
        if type(seg) is list or (type(seg) is dict and type(seg.get("counts")) is list):
            # Unusual polygons (a first polygon of <= 4 numbers, which pycocotools reads as a box, ...) and
            # uncompressed RLEs of an odd kind go through pycocotools itself, for its exact semantics.
            if type(seg) is dict:
                counts = seg["counts"]
                meta[r, :5] = (_MASK_UNCOMPRESSED, *_size_of(seg, ann, side), num_raw, num_raw + len(counts))
                raw.append(counts)
                num_raw += len(counts)
                is_rle[r] = True
                continue
            try:
                seg = coco.annToRLE(ann)
            except Exception as error:
                raise ValueError(
                    f"COCOeval_opt: {side} {_describe(ann)} has an invalid segmentation: {error!r}"
                ) from error
        if type(seg) is not dict or "counts" not in seg:
            raise ValueError(
                f"COCOeval_opt: {side} {_describe(ann)}: segmentation must be polygons or an RLE dict, "
                f"got {type(seg).__name__}"
            )
        counts = seg["counts"]
        data = _ascii(counts, [ann], [counts], side) if isinstance(counts, str) else bytes(counts)
        meta[r, :5] = (_MASK_COMPRESSED, *_size_of(seg, ann, side), num_bytes, num_bytes + len(data))
        chunks.append(data)
        num_bytes += len(data)
        is_rle[r] = True
    _check_mask_sizes(anns, coco, meta[:, 1:3], is_rle, side)
    lengths = np.fromiter(map(len, polygons), dtype=np.int64, count=len(polygons))
    poly_offsets = np.zeros(len(polygons) + 1, dtype=np.int64)
    np.cumsum(lengths, out=poly_offsets[1:])
    try:
        coords = np.fromiter(itertools.chain.from_iterable(polygons), dtype=np.float64, count=int(poly_offsets[-1]))
    except (TypeError, ValueError) as error:
        raise ValueError(f"COCOeval_opt: {side} polygon coordinates must be numbers: {error}") from error
    try:
        raw_counts = np.fromiter(itertools.chain.from_iterable(raw), dtype=np.int64, count=num_raw)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"COCOeval_opt: {side} uncompressed RLE counts must be integers: {error}") from error
    return [
        torch.from_numpy(meta),
        torch.from_numpy(coords),
        torch.from_numpy(poly_offsets),
        torch.from_numpy(np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()),
        torch.from_numpy(raw_counts),
    ]


def _ascii(text: str, anns: list[dict], counts: list[str], side: str) -> bytes:
    """``text`` as ASCII bytes; a compressed RLE with other characters is malformed (named in the error)."""
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as error:
        bad = next(a for a, c in zip(anns, counts) if not c.isascii())
        raise ValueError(f"COCOeval_opt: {side} {_describe(bad)} has a malformed compressed RLE (non-ASCII)") from error


def _size_of(seg: dict, ann: dict, side: str) -> tuple[int, int]:
    size = seg.get("size")
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ValueError(f"COCOeval_opt: {side} {_describe(ann)}: an RLE needs 'size': [height, width], got {size!r}")
    return int(size[0]), int(size[1])


def _check_mask_sizes(anns: list[dict], coco: Any, sizes: np.ndarray, is_rle: np.ndarray, side: str) -> None:
    """RLE sizes must match their image's (height, width) where the image records it."""
    image_ids = list(map(itemgetter("image_id"), anns))
    sizes_of = {}
    for i in set(image_ids):
        image = coco.imgs.get(i) or {}
        sizes_of[i] = (image.get("height", -1), image.get("width", -1))
    expected = np.asarray(list(map(sizes_of.__getitem__, image_ids)), dtype=np.int64).reshape(-1, 2)
    known = (expected >= 0).all(axis=1) & is_rle
    bad = np.flatnonzero(known & (sizes != expected).any(axis=1))
    if len(bad):
        r = int(bad[0])
        raise ValueError(
            f"COCOeval_opt: {side} {_describe(anns[r])} has an RLE of size {sizes[r].tolist()}, "
            f"but its image is {expected[r].tolist()} (height, width)"
        )


class _Annotations:
    """The arrays of one side (ground truth or detections) that ``coco_eval_evaluate`` reads."""

    def __init__(self, coco: Any, params: Any, iou_type: str, is_gt: bool):
        side = "ground-truth" if is_gt else "detection"
        anns, self.rows, self.offsets = _group(coco, params.imgIds, params.catIds, bool(params.useCats))
        self.ids = _column(anns, "id", np.int64, side)
        self.areas = _column(anns, "area", np.float64, side)
        n = len(anns)
        num_kpts = len(params.kpt_oks_sigmas) if iou_type == "keypoints" else 0
        self.masks: list[torch.Tensor] = []
        if is_gt:
            # pycocotools: ignore = iscrowd (a given "ignore" is overwritten), keypoints also num_keypoints == 0
            self.crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=np.uint8, count=n)
            self.ignore = self.crowd.copy()
            self.scores = np.zeros(n, dtype=np.float64)
            if iou_type == "keypoints":
                self.ignore |= (_column(anns, "num_keypoints", np.int64, side) == 0).astype(np.uint8)
        else:
            self.crowd = self.ignore = np.zeros(n, dtype=np.uint8)
            self.scores = _column(anns, "score", np.float64, side)
            _check_finite(self.scores, anns, "score")
        if iou_type == "bbox":
            self.geometry = _column(anns, "bbox", np.float64, side, width=4)
            if not is_gt:
                _check_finite(self.geometry, anns, "bbox")
        elif iou_type == "keypoints":
            keypoints = _column(anns, "keypoints", np.float64, side, width=3 * num_kpts)
            if is_gt:
                self.geometry = np.concatenate([_column(anns, "bbox", np.float64, side, width=4), keypoints], axis=1)
            else:
                _check_finite(keypoints, anns, "keypoint")
                self.geometry = keypoints
        else:
            self.geometry = np.zeros((n, 0), dtype=np.float64)
            self.masks = _mask_sources(anns, coco, side, self.ids)


def _detection_side(detections: DetectionArrays, coco_gt: Any, params: Any, iou_type: str) -> _Annotations:
    """The detection arrays ``coco_eval_evaluate`` reads, from :class:`DetectionArrays` (no ``COCO`` object).

    Grouped as :func:`_group` groups ``loadRes``' annotations: by (category, image), result order within a group;
    detections of images or categories outside ``params`` are left out, as pycocotools leaves them.
    """
    side = "detection"
    n = len(detections)
    img_ids = params.imgIds
    num_images = len(img_ids)
    unknown = set(detections.image_ids.tolist()) - coco_gt.imgs.keys()
    if unknown:  # loadRes' assertion, with the image named
        raise ValueError(
            f"COCOeval_opt: detections for image id {sorted(unknown, key=repr)[0]!r}, which is not in the ground truth"
        )
    img_pos = _positions(detections.image_ids, img_ids)
    cat_pos = _positions(detections.category_ids, params.catIds)
    used = np.flatnonzero((img_pos >= 0) & (cat_pos >= 0))
    group = cat_pos[used] * num_images + img_pos[used]
    num_groups = len(params.catIds) * num_images
    dt = _Annotations.__new__(_Annotations)
    dt.rows = np.argsort(group, kind="stable").astype(np.int64)
    dt.offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=num_groups), out=dt.offsets[1:])
    dt.ids = used + 1  # loadRes numbers the results from 1
    all_used = len(used) == n  # the usual case: no copies of the columns
    if detections.areas is None:
        if iou_type != "segm":
            raise ValueError(f"COCOeval_opt: detections= for iouType {iou_type!r} needs areas")
        dt.areas = np.zeros(0, dtype=np.float64)  # coco_eval_evaluate measures the decoded masks
    else:
        dt.areas = np.ascontiguousarray(detections.areas[used], dtype=np.float64)
    dt.scores = np.ascontiguousarray(detections.scores[used], dtype=np.float64)
    dt.crowd = dt.ignore = np.zeros(len(used), dtype=np.uint8)
    if not np.isfinite(dt.scores).all():
        r = int(used[np.flatnonzero(~np.isfinite(dt.scores))[0]])
        raise ValueError(f"COCOeval_opt: detection {r} (image id {detections.image_ids[r]!r}) has a non-finite score")
    dt.masks = []
    if iou_type == "bbox":
        if detections.boxes is None:
            raise ValueError("COCOeval_opt: detections= for iouType 'bbox' needs boxes")
        dt.geometry = np.ascontiguousarray(detections.boxes[used], dtype=np.float64).reshape(len(used), 4)
        finite = np.isfinite(dt.geometry).all(axis=1)
        if not finite.all():
            r = int(used[np.flatnonzero(~finite)[0]])
            raise ValueError(
                f"COCOeval_opt: detection {r} (image id {detections.image_ids[r]!r}) has a non-finite bbox"
            )
        return dt
    if iou_type != "segm" or detections.rle_counts is None or detections.rle_sizes is None:
        raise ValueError(f"COCOeval_opt: detections= supports 'bbox' (boxes) and 'segm' (RLEs), not {iou_type!r}")
    dt.geometry = np.zeros((len(used), 0), dtype=np.float64)
    counts = list(detections.rle_counts) if all_used else [detections.rle_counts[r] for r in used.tolist()]
    try:
        data = bytearray("".join(counts), "ascii")  # one copy, and writable: torch takes it as it is
    except UnicodeEncodeError as error:
        r = int(used[next(k for k, c in enumerate(counts) if not c.isascii())])
        raise ValueError(
            f"COCOeval_opt: {side} {r} (image id {detections.image_ids[r]!r}) has a malformed compressed RLE "
            "(non-ASCII)"
        ) from error
    sizes = np.asarray(detections.rle_sizes, dtype=np.int64).reshape(n, 2)[used]
    expected = _image_sizes(coco_gt, img_ids)[img_pos[used]]
    bad = np.flatnonzero((expected >= 0).all(axis=1) & (sizes != expected).any(axis=1))
    if len(bad):
        k = int(bad[0])
        r = int(used[k])
        raise ValueError(
            f"COCOeval_opt: {side} {r} (image id {detections.image_ids[r]!r}) has an RLE of size "
            f"{sizes[k].tolist()}, but its image is {expected[k].tolist()} (height, width)"
        )
    meta = np.zeros((len(used), 7), dtype=np.int64)
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=len(counts))
    meta[:, 0] = _MASK_COMPRESSED
    meta[:, 1:3] = sizes
    np.cumsum(lengths, out=meta[:, 4])
    meta[:, 3] = meta[:, 4] - lengths
    meta[:, 5] = dt.ids
    image_ids = detections.image_ids
    meta[:, 6] = image_ids[used] if image_ids.dtype.kind in "iu" else -1
    dt.masks = [
        torch.from_numpy(meta),
        torch.from_numpy(np.zeros(0, dtype=np.float64)),
        torch.from_numpy(np.zeros(1, dtype=np.int64)),
        torch.from_numpy(np.frombuffer(data, dtype=np.uint8)),
        torch.from_numpy(np.zeros(0, dtype=np.int64)),
    ]
    return dt


class COCOeval_opt(COCOeval):
    """pycocotools' ``COCOeval`` whose ``evaluate()`` and ``accumulate()`` run in C++.

    Use it exactly like ``COCOeval``::

        coco_eval = COCOeval_opt(coco_gt, coco_dt, "bbox")   # "bbox", "segm" or "keypoints"
        coco_eval.params.maxDets = [1, 10, 300]
        coco_eval.evaluate(); coco_eval.accumulate(); coco_eval.summarize()
        coco_eval.stats, coco_eval.eval["precision"]          # [T, R, K, A, M]

    Args:
        cocoGt: ``pycocotools.coco.COCO`` with the ground truth.
        cocoDt: ``COCO`` with the detections (``cocoGt.loadRes(results)``).
        iouType: "segm", "bbox" or "keypoints".

    ``evalImgs`` and ``ious`` are not materialised (see the module docstring); everything else matches
    pycocotools after ``evaluate()``/``accumulate()``.
    """

    def __init__(
        self,
        cocoGt: Any = None,
        cocoDt: Any = None,
        iouType: str = "segm",
        *,
        detections: DetectionArrays | None = None,
        gt_cache: dict | None = None,
    ):
        super().__init__(cocoGt, cocoDt, iouType)
        if detections is not None and cocoDt is not None:
            raise ValueError("COCOeval_opt: pass either cocoDt or detections=, not both")
        self._native_eval: dict[str, torch.Tensor] | None = None
        self._detections = detections
        self._gt_cache = gt_cache

    def _ground_truth(self, p: Any) -> _Annotations:
        """The flattened ground truth for ``p``, from ``gt_cache`` when an earlier evaluation made it.

        The cache belongs to whoever passed it (``COCOEvaluator``: one per evaluator and ground truth) and
        assumes the ground-truth ``COCO`` is not modified while it is in use.
        """
        if self._gt_cache is None:
            return _Annotations(self.cocoGt, p, p.iouType, is_gt=True)
        key = (
            id(self.cocoGt), p.iouType, tuple(p.imgIds), tuple(p.catIds), bool(p.useCats),
            len(p.kpt_oks_sigmas) if p.iouType == "keypoints" else 0,
        )  # fmt: skip
        entry = self._gt_cache.get(key)
        if entry is None or entry[0] is not self.cocoGt:
            entry = (self.cocoGt, _Annotations(self.cocoGt, p, p.iouType, is_gt=True))
            self._gt_cache[key] = entry
        return entry[1]

    def evaluate(self) -> None:
        """Per-image evaluation of every (category, area range, image); fills what ``accumulate`` reads."""
        self._native_eval = None
        if not native_coco_eval_available():
            if self._detections is not None:
                raise RuntimeError(
                    "COCOeval_opt(detections=...) needs the compiled coco_eval op, which is unavailable "
                    f"({ops_status().get('coco_eval', 'unknown')}); pass cocoDt=cocoGt.loadRes(results) instead"
                )
            _warn_fallback()
            return super().evaluate()
        tic = time.perf_counter()
        p = self.params
        if p.useSegm is not None:
            p.iouType = "segm" if p.useSegm == 1 else "bbox"
        if p.iouType not in _IOU_TYPES:
            raise ValueError(f"COCOeval_opt: params.iouType must be 'bbox', 'segm' or 'keypoints', got {p.iouType!r}")
        p.imgIds = list(np.unique(p.imgIds))
        if p.useCats:
            p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        if not p.maxDets or p.maxDets[0] < 0:
            raise ValueError(f"COCOeval_opt: params.maxDets must be non-negative numbers, got {p.maxDets}")
        self.params = p
        sigmas = np.ascontiguousarray(getattr(p, "kpt_oks_sigmas", np.zeros(0)), dtype=np.float64).reshape(-1)
        if p.iouType == "keypoints" and len(sigmas) == 0:
            raise ValueError("COCOeval_opt: params.kpt_oks_sigmas must not be empty for keypoints")

        gt = self._ground_truth(p)
        if self._detections is None:
            dt = _Annotations(self.cocoDt, p, p.iouType, is_gt=False)
        elif not p.useCats:
            raise ValueError("COCOeval_opt: detections= needs params.useCats=1; use cocoDt for useCats=0")
        else:
            dt = _detection_side(self._detections, self.cocoGt, p, p.iouType)
        t = torch.from_numpy
        eval_offsets, scores, flags, num_gt, present = torch.ops.libdet.coco_eval_evaluate(
            _IOU_TYPES[p.iouType],
            t(gt.rows), t(gt.offsets), t(dt.rows), t(dt.offsets),
            t(gt.ids), t(gt.areas), t(gt.crowd), t(gt.ignore),
            t(dt.ids), t(dt.areas), t(dt.scores),
            t(np.ascontiguousarray(gt.geometry)), t(np.ascontiguousarray(dt.geometry)),
            gt.masks, dt.masks,
            t(sigmas),
            t(np.ascontiguousarray(p.iouThrs, dtype=np.float64).reshape(-1)),
            t(np.ascontiguousarray(p.areaRng, dtype=np.float64).reshape(-1, 2)),
            int(p.maxDets[-1]),
            not (p.iouType == "keypoints" and not p.useCats),  # pycocotools' computeOks finds no gt then
        )  # fmt: skip
        self._native_eval = {
            "eval_offsets": eval_offsets, "scores": scores, "flags": flags, "num_gt": num_gt, "present": present,
        }  # fmt: skip
        self._paramsEval = copy.deepcopy(self.params)
        logger.info("COCOeval_opt.evaluate() finished in %.2f seconds.", time.perf_counter() - tic)

    def accumulate(self, p: Any = None) -> None:
        """Precision/recall/scores over the evaluated images into ``self.eval`` (pycocotools' layout).

        Args:
            p: parameters to accumulate with (default: ``self.params``), as in pycocotools.
        """
        if self._native_eval is None:
            if not self.evalImgs:
                raise RuntimeError("COCOeval_opt.accumulate(): run evaluate() first")
            return super().accumulate(p)  # evaluate() ran pycocotools' implementation
        tic = time.perf_counter()
        if p is None:
            p = self.params
        p.catIds = p.catIds if p.useCats == 1 else [-1]
        T, R = len(p.iouThrs), len(p.recThrs)
        K = len(p.catIds) if p.useCats else 1
        A, M = len(p.areaRng), len(p.maxDets)
        pe = self._paramsEval
        set_k = set(pe.catIds if pe.useCats else [-1])
        set_a = set(map(tuple, pe.areaRng))
        set_m = set(pe.maxDets)
        set_i = set(pe.imgIds)
        k_list = [n for n, k in enumerate(p.catIds) if k in set_k]
        m_list = [m for m in p.maxDets if m in set_m]
        a_list = [n for n, a in enumerate(map(tuple, p.areaRng)) if a in set_a]
        i_list = [n for n, i in enumerate(p.imgIds) if i in set_i]
        native = self._native_eval
        if T != native["flags"].shape[1]:
            raise ValueError(
                f"COCOeval_opt.accumulate(): params.iouThrs has {T} thresholds but evaluate() used "
                f"{native['flags'].shape[1]}"
            )

        def longs(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64).reshape(-1)

        precision, recall, scores = torch.ops.libdet.coco_eval_accumulate(
            native["eval_offsets"], native["scores"], native["flags"], native["num_gt"], native["present"],
            len(pe.imgIds), longs(k_list), longs(a_list), longs(m_list), longs(i_list),
            torch.from_numpy(np.ascontiguousarray(p.recThrs, dtype=np.float64).reshape(-1)), K, A, M,
        )  # fmt: skip
        self.eval = {
            "params": p,
            "counts": [T, R, K, A, M],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "precision": precision.numpy(),
            "recall": recall.numpy(),
            "scores": scores.numpy(),
        }
        logger.info("COCOeval_opt.accumulate() finished in %.2f seconds.", time.perf_counter() - tic)
