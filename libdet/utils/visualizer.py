"""Draw predictions and annotations on images: boxes, labels, masks, keypoints, semantic and panoptic maps.

Follows ``detectron2.utils.visualizer``: a :class:`Visualizer` wraps one RGB image in a matplotlib figure
(Agg backend, never a display), its ``draw_*`` methods add artists in image pixel coordinates, and
:meth:`Visualizer.get_output` returns the :class:`VisImage` to read back as an array or save.

``metadata`` is anything with attributes (``libdet.data.catalog.Metadata``, ``types.SimpleNamespace``) or a
dict; the keys read are ``thing_classes``, ``thing_colors``, ``stuff_classes``, ``stuff_colors``,
``keypoint_names``, ``keypoint_connection_rules``, ``ignore_label``, ``label_divisor`` and
``thing_dataset_id_to_contiguous_id``. Colours given as tuples of ``0..255`` in metadata; colours passed to
``draw_*`` methods are matplotlib colours (names or RGB floats in ``0..1``).
"""

from __future__ import annotations

import colorsys
import math
import os
import types
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch

from libdet.structures import BitMasks, Boxes, BoxMode, Instances, Keypoints, PolygonMasks, ROIMasks, RotatedBoxes
from libdet.structures.masks import polygon_area, polygons_to_bitmask, rle_to_bitmask

from .colormap import colormap, random_color
from .file_io import PathManager, atomic_write

__all__ = ["ColorMode", "VisImage", "Visualizer", "GenericMask"]

_SMALL_OBJECT_AREA_THRESH = 1000
_LARGE_MASK_AREA_THRESH = 120000
_OFF_WHITE = (1.0, 1.0, 240.0 / 255)
_RED = (1.0, 0.0, 0.0)
_KEYPOINT_THRESHOLD = 0.05
_RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ColorMode(Enum):
    """How instances are coloured.

    Attributes:
        IMAGE: every instance gets its own colour (distinct palette colours, in instance order); masks are
            overlaid with low opacity.
        SEGMENTATION: instances of one category get similar colours (``metadata.thing_colors``, slightly
            jittered so that neighbours stay apart); masks are overlaid with high opacity.
        IMAGE_BW: like IMAGE, but the image is turned grey outside the instance masks.
    """

    IMAGE = 0
    SEGMENTATION = 1
    IMAGE_BW = 2


def _meta_get(metadata: Any, key: str, default: Any = None) -> Any:
    if isinstance(metadata, dict):
        return metadata.get(key, default)
    return getattr(metadata, key, default)


def _mask_to_polygons(mask: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Trace the outlines of a binary mask (marching squares at level 0.5, through contourpy).

    Returns:
        (polygons, has_holes): flat ``[x0, y0, ...]`` float64 arrays in the convention where pixel ``(r, c)``
        covers ``[c, c + 1] x [r, r + 1]`` (outer boundaries and hole boundaries alike), and whether the mask
        has holes.
    """
    import contourpy
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return [], False
    has_holes = bool((ndimage.binary_fill_holes(mask) & ~mask).any())
    padded = np.pad(mask, 1).astype(np.float64)
    # Padded pixel (r, c) is original pixel (r - 1, c - 1), whose centre is at (c - 0.5, r - 0.5).
    xs = np.arange(padded.shape[1], dtype=np.float64) - 0.5
    ys = np.arange(padded.shape[0], dtype=np.float64) - 0.5
    gen = contourpy.contour_generator(xs, ys, padded, line_type=contourpy.LineType.Separate)
    polygons = []
    for line in gen.lines(0.5):
        if len(line) > 1 and np.array_equal(line[0], line[-1]):
            line = line[:-1]
        if len(line) >= 3:
            polygons.append(np.ascontiguousarray(line, dtype=np.float64).reshape(-1))
    return polygons, has_holes


class GenericMask:
    """One instance mask held as a binary bitmap, polygons or a COCO RLE, converted lazily between them.

    Attributes:
        height, width: size of the image the mask belongs to.
    """

    def __init__(
        self, mask_or_polygons: np.ndarray | torch.Tensor | list[Any] | dict[str, Any], height: int, width: int
    ):
        """
        Args:
            mask_or_polygons: a ``(height, width)`` array or tensor (bool, 0/1 integers, or probabilities
                thresholded at 0.5); a list of polygons (flat ``[x0, y0, x1, y1, ...]``, absolute pixels); or a
                COCO RLE dict ``{"size": [height, width], "counts": ...}``.
            height: image height.
            width: image width.

        Raises:
            ValueError: on a mask of another size, a polygon with fewer than 3 points or an odd number of
                coordinates, or an RLE without ``size``/``counts`` or of another size.
            TypeError: on any other input type.
        """
        self.height, self.width = int(height), int(width)
        self._mask: np.ndarray | None = None
        self._polygons: list[np.ndarray] | None = None
        self._has_holes: bool | None = None
        m = mask_or_polygons
        if isinstance(m, dict):
            if "counts" not in m or "size" not in m:
                raise ValueError(f"GenericMask: an RLE needs keys 'size' and 'counts', got keys {sorted(m)}.")
            if tuple(int(s) for s in m["size"]) != (self.height, self.width):
                raise ValueError(
                    f"GenericMask: RLE size {list(m['size'])} differs from the image size {[self.height, self.width]}."
                )
            self._mask = rle_to_bitmask(m).astype(np.uint8)
        elif isinstance(m, (list, tuple)):
            polygons = []
            for j, p in enumerate(m):
                p = np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p, dtype=np.float64).reshape(-1)
                if len(p) < 6 or len(p) % 2:
                    raise ValueError(
                        f"GenericMask: polygon {j} has {len(p)} coordinates; expected an even number >= 6 "
                        "([x0, y0, x1, y1, ...], at least 3 points)."
                    )
                polygons.append(p)
            self._polygons = polygons
            self._has_holes = False
        elif isinstance(m, (np.ndarray, torch.Tensor)):
            arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m
            if arr.shape != (self.height, self.width):
                raise ValueError(
                    f"GenericMask: mask shape {tuple(arr.shape)} differs from the image size "
                    f"({self.height}, {self.width})."
                )
            arr = arr >= 0.5 if np.issubdtype(arr.dtype, np.floating) else arr != 0
            self._mask = arr.astype(np.uint8)
        else:
            raise TypeError(
                f"GenericMask: expected a bitmap, a list of polygons or an RLE dict, got {type(m).__name__}."
            )

    @property
    def mask(self) -> np.ndarray:
        """``(height, width)`` uint8 array of 0/1."""
        if self._mask is None:
            self._mask = polygons_to_bitmask(self._polygons, self.height, self.width).astype(np.uint8)
        return self._mask

    @property
    def polygons(self) -> list[np.ndarray]:
        """The outlines as flat ``[x0, y0, ...]`` float64 arrays (hole outlines included when traced from a
        bitmap; see :attr:`has_holes`)."""
        if self._polygons is None:
            self._polygons, self._has_holes = _mask_to_polygons(self._mask)
        return self._polygons

    @property
    def has_holes(self) -> bool:
        """Whether the mask has holes (then its polygons cannot be drawn as filled shapes)."""
        if self._has_holes is None:
            self._polygons, self._has_holes = _mask_to_polygons(self._mask)
        return self._has_holes

    def area(self) -> int:
        """Number of mask pixels."""
        return int(self.mask.sum())

    def bbox(self) -> np.ndarray:
        """``(4,)`` float box ``(x0, y0, x1, y1)`` around the mask; zeros when it is empty."""
        if self._polygons is not None and len(self._polygons):
            pts = np.concatenate([p.reshape(-1, 2) for p in self._polygons])
            return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float64)
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return np.zeros(4, dtype=np.float64)
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


class _PanopticPrediction:
    """Split a panoptic id map into per-segment masks, largest first, split into stuff and things."""

    def __init__(
        self, panoptic_seg: np.ndarray | torch.Tensor, segments_info: list[dict[str, Any]] | None, metadata: Any
    ):
        if isinstance(panoptic_seg, torch.Tensor):
            panoptic_seg = panoptic_seg.detach().cpu().numpy()
        seg = np.asarray(panoptic_seg)
        if seg.ndim != 2:
            raise ValueError(f"draw_panoptic_seg: `panoptic_seg` must be (H, W), got shape {seg.shape}.")
        self._seg = seg
        ids, areas = np.unique(seg, return_counts=True)
        area_of = dict(zip(ids.tolist(), areas.tolist()))
        if segments_info is None:
            segments_info = self._infer_segments(ids, metadata)
        infos = []
        for i, s in enumerate(segments_info):
            for key in ("id", "category_id", "isthing"):
                if key not in s:
                    raise ValueError(f"draw_panoptic_seg: `segments_info[{i}]` lacks key {key!r}; it has {sorted(s)}.")
            if area_of.get(int(s["id"]), 0) > 0:
                infos.append((area_of[int(s["id"])], i, s))
        infos.sort(key=lambda t: (-t[0], t[1]))
        self._infos = [s for _, _, s in infos]
        known = np.array([int(s["id"]) for s in self._infos], dtype=seg.dtype)
        self._non_void = np.isin(seg, known)

    @staticmethod
    def _infer_segments(ids: np.ndarray, metadata: Any) -> list[dict[str, Any]]:
        divisor = _meta_get(metadata, "label_divisor")
        if divisor is None:
            raise ValueError(
                "draw_panoptic_seg: `segments_info` is None, so segment ids are decoded as category * "
                "label_divisor + instance; metadata needs `label_divisor` for that."
            )
        thing_ids = set(_meta_get(metadata, "thing_dataset_id_to_contiguous_id", {}).values())
        return [
            {"id": int(i), "category_id": int(i) // int(divisor), "isthing": int(i) // int(divisor) in thing_ids}
            for i in ids.tolist()
            if i >= 0
        ]

    def non_void_mask(self) -> np.ndarray:
        """``(H, W)`` bool: pixels that belong to a listed segment."""
        return self._non_void

    def stuff_masks(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        for s in self._infos:
            if not s["isthing"]:
                yield self._seg == s["id"], s

    def thing_masks(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        for s in self._infos:
            if s["isthing"]:
                yield self._seg == s["id"], s


def _create_text_labels(
    classes: Sequence[int] | None,
    scores: Sequence[float] | None,
    class_names: Sequence[str] | None,
    is_crowd: Sequence[int] | None = None,
) -> list[str] | None:
    """Labels ``"name score%"`` (``"|crowd"`` appended for crowd annotations); None without classes and scores.

    Raises:
        ValueError: when a class id is outside ``class_names`` (metadata ``thing_classes``).
    """
    labels = None
    if classes is not None:
        if class_names is not None and len(class_names) > 0:
            for c in classes:
                if not 0 <= int(c) < len(class_names):
                    raise ValueError(
                        f"Visualizer: class id {int(c)} is outside metadata thing_classes ({len(class_names)} names)."
                    )
            labels = [str(class_names[int(c)]) for c in classes]
        else:
            labels = [str(int(c)) for c in classes]
    if scores is not None:
        if labels is None:
            labels = [f"{s * 100:.0f}%" for s in scores]
        else:
            labels = [f"{name} {s * 100:.0f}%" for name, s in zip(labels, scores)]
    if labels is not None and is_crowd is not None:
        labels = [name + ("|crowd" if crowd else "") for name, crowd in zip(labels, is_crowd)]
    return labels


def _as_rgb_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"Visualizer: `img_rgb` must be (H, W, 3) RGB (or (H, W) grey), got shape {arr.shape}.")
    return np.ascontiguousarray(arr[:, :, :3].clip(0, 255).astype(np.uint8))


class VisImage:
    """An image inside a matplotlib figure whose axes span exactly the image, in pixel coordinates.

    Attributes:
        img: the ``(H, W, 3)`` uint8 RGB image drawn on.
        width, height: the image size (output size is this times ``scale``).
        scale: output scale.
        fig, ax: the matplotlib figure and axes.
    """

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        """
        Args:
            img: ``(H, W, 3)`` uint8 RGB image.
            scale: the output image is ``scale`` times the size of ``img``.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if scale <= 0:
            raise ValueError(f"VisImage: `scale` must be positive, got {scale}.")
        self.img = img
        self.scale = scale
        self.height, self.width = img.shape[:2]
        fig = Figure(frameon=False)
        self.dpi = fig.get_dpi()
        # The small epsilon keeps the pixel size from rounding down to one less than intended.
        fig.set_size_inches((self.width * scale + 1e-2) / self.dpi, (self.height * scale + 1e-2) / self.dpi)
        self.canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes([0.0, 0.0, 1.0, 1.0])
        ax.axis("off")
        self.fig, self.ax = fig, ax
        self.reset_image(img)

    def reset_image(self, img: np.ndarray) -> None:
        """Draw ``img`` (``(H, W, 3)``, same size) as the new background."""
        self.ax.imshow(img.astype(np.uint8), extent=(0, self.width, self.height, 0), interpolation="nearest")
        self.ax.set_xlim(0, self.width)
        self.ax.set_ylim(self.height, 0)

    def get_image(self) -> np.ndarray:
        """Render and return the ``(round(H * scale), round(W * scale), 3)`` uint8 RGB image."""
        self.canvas.draw()
        buf = np.asarray(self.canvas.buffer_rgba())
        return np.ascontiguousarray(buf[:, :, :3])

    def save(self, filepath: str) -> None:
        """Write the image; raster formats (png, jpg, ...) hold exactly :meth:`get_image`, other extensions
        (pdf, svg, ...) go through matplotlib. Local files are written atomically."""
        ext = os.path.splitext(filepath)[1].lower()
        if ext in _RASTER_EXTENSIONS:
            from PIL import Image

            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(ext, ext[1:].upper())
            with atomic_write(filepath, "wb") as f:
                Image.fromarray(self.get_image()).save(f, format=fmt)
        else:
            with atomic_write(filepath, "wb") as f:
                self.fig.savefig(f, format=ext[1:] or "png", dpi=self.dpi)


class Visualizer:
    """Draws on one RGB image; see the module docstring. All coordinates are image pixels (before ``scale``)."""

    def __init__(
        self,
        img_rgb: np.ndarray | torch.Tensor,
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ):
        """
        Args:
            img_rgb: ``(H, W, 3)`` RGB image with values in ``0..255`` (array or tensor; ``(H, W)`` is grey).
            metadata: dataset metadata (attributes or dict); None for none (class ids are shown as numbers).
            scale: the output is ``scale`` times the input size.
            instance_mode: how instances are coloured (:class:`ColorMode`).
        """
        self.img = _as_rgb_uint8(img_rgb)
        self.metadata = metadata if metadata is not None else types.SimpleNamespace()
        self.output = VisImage(self.img, scale=scale)
        self.cpu_device = torch.device("cpu")
        self._default_font_size = max(np.sqrt(self.output.height * self.output.width) // 90, 10 // scale)
        self._instance_mode = ColorMode(instance_mode)
        self.keypoint_threshold = _KEYPOINT_THRESHOLD
        self._rng = np.random.default_rng(0)

    def draw_instance_predictions(self, predictions: Instances) -> VisImage:
        """Draw a model's per-image output: ``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks``
        (``(N, H, W)`` tensor, BitMasks or PolygonMasks) and ``pred_keypoints`` (``(N, K, 3)``), whichever exist.
        """
        if not isinstance(predictions, Instances):
            raise TypeError(f"draw_instance_predictions: expected Instances, got {type(predictions).__name__}.")
        predictions = predictions.to(self.cpu_device)
        boxes = predictions.pred_boxes if predictions.has("pred_boxes") else None
        scores = predictions.scores.tolist() if predictions.has("scores") else None
        classes = predictions.pred_classes.tolist() if predictions.has("pred_classes") else None
        labels = _create_text_labels(classes, scores, _meta_get(self.metadata, "thing_classes"))
        keypoints = predictions.pred_keypoints if predictions.has("pred_keypoints") else None
        masks = self._convert_masks(predictions.pred_masks) if predictions.has("pred_masks") else None

        colors, alpha = None, 0.5
        if self._instance_mode == ColorMode.SEGMENTATION and classes is not None:
            colors, alpha = self._class_colors(classes, jitter=True), 0.8
        if self._instance_mode == ColorMode.IMAGE_BW:
            self.output.reset_image(self._create_grayscale_image(self._union(masks)))
            alpha = 0.3
        return self.overlay_instances(
            boxes=boxes, labels=labels, masks=masks, keypoints=keypoints, assigned_colors=colors, alpha=alpha
        )

    def draw_sem_seg(
        self, sem_seg: np.ndarray | torch.Tensor, area_threshold: float | None = None, alpha: float = 0.8
    ) -> VisImage:
        """Draw a semantic segmentation map: each label's region filled with its ``stuff_colors`` colour (or
        a palette colour per label) and named by ``stuff_classes`` (or its number).

        Args:
            sem_seg: ``(H, W)`` integer label map. With ``stuff_classes`` in metadata, labels outside it are
                skipped; otherwise ``metadata.ignore_label`` (default 255) is.
            area_threshold: regions (polygons) smaller than this many pixels are not drawn.
            alpha: fill opacity.
        """
        seg = sem_seg.detach().cpu().numpy() if isinstance(sem_seg, torch.Tensor) else np.asarray(sem_seg)
        if seg.shape != (self.output.height, self.output.width):
            raise ValueError(
                f"draw_sem_seg: `sem_seg` has shape {seg.shape}, expected the image size "
                f"({self.output.height}, {self.output.width})."
            )
        labels, areas = np.unique(seg, return_counts=True)
        stuff_classes = _meta_get(self.metadata, "stuff_classes")
        ignore_label = _meta_get(self.metadata, "ignore_label", 255)
        for label in labels[np.argsort(-areas, kind="stable")].tolist():
            if stuff_classes is not None:
                if not 0 <= label < len(stuff_classes):
                    continue
                text = str(stuff_classes[label])
            else:
                if label == ignore_label:
                    continue
                text = str(label)
            self.draw_binary_mask(
                (seg == label).astype(np.uint8),
                color=self._stuff_color(label),
                edge_color=_OFF_WHITE,
                text=text,
                alpha=alpha,
                area_threshold=area_threshold,
            )
        return self.output

    def draw_panoptic_seg(
        self,
        panoptic_seg: np.ndarray | torch.Tensor,
        segments_info: list[dict[str, Any]] | None,
        area_threshold: float | None = None,
        alpha: float = 0.7,
    ) -> VisImage:
        """Draw a panoptic segmentation: stuff segments like :meth:`draw_sem_seg`, things like instances.

        Args:
            panoptic_seg: ``(H, W)`` segment-id map; ids not listed in ``segments_info`` are void.
            segments_info: one dict per segment with ``id``, ``category_id``, ``isthing`` and optionally
                ``score`` and ``iscrowd``. If None, ids are decoded as ``category * label_divisor + k`` with
                metadata ``label_divisor`` and ``thing_dataset_id_to_contiguous_id``.
            area_threshold: stuff regions smaller than this are not drawn.
            alpha: fill opacity.
        """
        pred = _PanopticPrediction(panoptic_seg, segments_info, self.metadata)
        if pred.non_void_mask().shape != (self.output.height, self.output.width):
            raise ValueError(
                f"draw_panoptic_seg: `panoptic_seg` has shape {pred.non_void_mask().shape}, expected the image "
                f"size ({self.output.height}, {self.output.width})."
            )
        if self._instance_mode == ColorMode.IMAGE_BW:
            self.output.reset_image(self._create_grayscale_image(pred.non_void_mask()))
        stuff_classes = _meta_get(self.metadata, "stuff_classes")
        for mask, info in pred.stuff_masks():
            c = int(info["category_id"])
            text = str(stuff_classes[c]) if stuff_classes is not None and 0 <= c < len(stuff_classes) else str(c)
            self.draw_binary_mask(
                mask.astype(np.uint8),
                color=self._stuff_color(c),
                edge_color=_OFF_WHITE,
                text=text,
                alpha=alpha,
                area_threshold=area_threshold,
            )
        things = list(pred.thing_masks())
        if not things:
            return self.output
        masks, infos = zip(*things)
        category_ids = [int(s["category_id"]) for s in infos]
        scores = [float(s["score"]) for s in infos] if all("score" in s for s in infos) else None
        labels = _create_text_labels(
            category_ids, scores, _meta_get(self.metadata, "thing_classes"), [s.get("iscrowd", 0) for s in infos]
        )
        colors = None
        if self._instance_mode == ColorMode.SEGMENTATION:
            colors = self._class_colors(category_ids, jitter=True)
        return self.overlay_instances(masks=list(masks), labels=labels, assigned_colors=colors, alpha=alpha)

    def draw_dataset_dict(self, dic: dict[str, Any]) -> VisImage:
        """Draw one dataset dict: its ``annotations`` (``bbox`` + ``bbox_mode``, ``segmentation`` as polygons or
        RLE, flat ``keypoints``, ``category_id``, ``iscrowd``), its ``sem_seg`` / ``sem_seg_file_name`` and its
        ``pan_seg`` / ``pan_seg_file_name`` with ``segments_info``.

        Raises:
            ValueError: on an annotation that lacks ``bbox_mode`` or ``category_id``, or on annotations that do
                not all carry the same fields; the message names the image and the annotation index.
        """
        where = f"dataset dict of image {dic.get('image_id', dic.get('file_name', '?'))!r}"
        annos = dic.get("annotations") or []
        if annos:
            self._draw_annotations(annos, where)
        sem_seg = dic.get("sem_seg")
        if sem_seg is None and dic.get("sem_seg_file_name"):
            sem_seg = self._read_png(dic["sem_seg_file_name"], mode="L")
        if sem_seg is not None:
            self.draw_sem_seg(sem_seg, area_threshold=0, alpha=0.5)
        pan_seg = dic.get("pan_seg")
        if pan_seg is None and dic.get("pan_seg_file_name"):
            rgb = self._read_png(dic["pan_seg_file_name"], mode="RGB").astype(np.int64)
            pan_seg = rgb[:, :, 0] + 256 * rgb[:, :, 1] + 256 * 256 * rgb[:, :, 2]
        if pan_seg is not None:
            if "segments_info" not in dic:
                raise ValueError(f"{where}: has a panoptic map but no 'segments_info'.")
            self.draw_panoptic_seg(pan_seg, dic["segments_info"], area_threshold=0, alpha=0.5)
        return self.output

    def _draw_annotations(self, annos: list[dict[str, Any]], where: str) -> None:
        def all_or_none(key: str) -> bool:
            has = [key in a for a in annos]
            if any(has) and not all(has):
                raise ValueError(
                    f"{where}: annotation {has.index(not has[0])} {'lacks' if has[0] else 'has'} "
                    f"{key!r} unlike annotation 0; draw_dataset_dict needs all or none."
                )
            return has[0]

        boxes = None
        if all_or_none("bbox"):
            boxes = []
            for i, a in enumerate(annos):
                if len(a["bbox"]) == 5:
                    boxes.append(list(a["bbox"]))
                    continue
                if "bbox_mode" not in a:
                    raise ValueError(f"{where}: annotation {i} has a 'bbox' but no 'bbox_mode'.")
                boxes.append(BoxMode.convert(list(a["bbox"]), BoxMode(a["bbox_mode"]), BoxMode.XYXY_ABS))
            if len({len(b) for b in boxes}) > 1:
                raise ValueError(f"{where}: mixes 4-number and 5-number (rotated) boxes.")
            boxes = np.asarray(boxes, dtype=np.float64)
        masks = [a["segmentation"] for a in annos] if all_or_none("segmentation") else None
        keypoints = None
        if all_or_none("keypoints"):
            keypoints = np.asarray([a["keypoints"] for a in annos], dtype=np.float64).reshape(len(annos), -1, 3)
        category_ids = None
        if all_or_none("category_id"):
            category_ids = [int(a["category_id"]) for a in annos]
        labels = None
        try:
            labels = _create_text_labels(
                category_ids, None, _meta_get(self.metadata, "thing_classes"), [a.get("iscrowd", 0) for a in annos]
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        colors = None
        if self._instance_mode == ColorMode.SEGMENTATION and category_ids is not None:
            colors = self._class_colors(category_ids, jitter=True)
        try:
            self.overlay_instances(boxes=boxes, labels=labels, masks=masks, keypoints=keypoints, assigned_colors=colors)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def overlay_instances(
        self,
        *,
        boxes: Any = None,
        labels: Sequence[str] | None = None,
        masks: Any = None,
        keypoints: Any = None,
        assigned_colors: Sequence[Any] | None = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draw ``N`` instances; larger ones first so that small ones stay visible.

        Args:
            boxes: :class:`Boxes` / :class:`RotatedBoxes`, or an ``(N, 4)`` XYXY_ABS / ``(N, 5)`` XYWHA_ABS array.
                Rotated boxes are handed to :meth:`overlay_rotated_instances` (masks and keypoints unsupported).
            labels: ``N`` strings.
            masks: ``(N, H, W)`` tensor/array, :class:`BitMasks`, :class:`PolygonMasks`, or a list of
                :class:`GenericMask`, polygon lists or RLE dicts.
            keypoints: :class:`Keypoints` or an ``(N, K, 3)`` array of ``(x, y, score)``.
            assigned_colors: ``N`` matplotlib colours; default: distinct palette colours.
            alpha: mask fill opacity.

        Raises:
            ValueError: when the inputs disagree on ``N`` or have the wrong shape.
        """
        counts = {}
        if boxes is not None:
            boxes = self._convert_boxes(boxes)
            counts["boxes"] = len(boxes)
        if masks is not None:
            masks = self._convert_masks(masks)
            counts["masks"] = len(masks)
        if keypoints is not None:
            keypoints = self._convert_keypoints(keypoints)
            counts["keypoints"] = len(keypoints)
        if labels is not None:
            counts["labels"] = len(labels)
        if assigned_colors is not None:
            counts["assigned_colors"] = len(assigned_colors)
        if len(set(counts.values())) > 1:
            raise ValueError(f"overlay_instances: the inputs disagree on the number of instances: {counts}.")
        num = next(iter(counts.values()), 0)
        if num == 0:
            return self.output
        if assigned_colors is None:
            assigned_colors = self._instance_colors(num)
        if boxes is not None and boxes.shape[1] == 5:
            if masks is not None or keypoints is not None:
                raise ValueError("overlay_instances: masks and keypoints cannot be drawn with rotated boxes.")
            return self.overlay_rotated_instances(boxes=boxes, labels=labels, assigned_colors=assigned_colors)

        if boxes is not None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        elif masks is not None:
            areas = np.asarray([m.area() for m in masks], dtype=np.float64)
        else:
            areas = np.zeros(num)
        for i in np.argsort(-areas, kind="stable").tolist():
            color = assigned_colors[i]
            if boxes is not None:
                self.draw_box(boxes[i], edge_color=color)
            if masks is not None:
                self._draw_generic_mask(masks[i], color, alpha=alpha)
            if labels is not None:
                self._draw_instance_label(
                    labels[i], color, boxes[i] if boxes is not None else None, masks[i] if masks is not None else None
                )
        if keypoints is not None:
            for kps in keypoints:
                self.draw_and_connect_keypoints(kps)
        return self.output

    def _draw_instance_label(self, label: str, color: Any, box: np.ndarray | None, mask: GenericMask | None) -> None:
        if box is not None:
            x0, y0, x1, y1 = box
            text_pos, align = (x0, y0), "left"
        elif mask is not None and mask.area() > 0:
            ys, xs = np.nonzero(mask.mask)
            text_pos, align = (float(np.median(xs)), float(np.median(ys))), "center"
            x0, y0, x1, y1 = mask.bbox()
        else:
            return
        scale = self.output.scale
        if (y1 - y0) < 40 * scale or (x1 - x0) * (y1 - y0) < _SMALL_OBJECT_AREA_THRESH * scale:
            # Small object: put the label outside it, below (or beside it when at the image bottom).
            text_pos = (x1, y0) if y1 >= self.output.height - 5 else (x0, y1)
            align = "left"
        height_ratio = (y1 - y0) / np.sqrt(self.output.height * self.output.width)
        font_size = np.clip((height_ratio - 0.02) / 0.08 + 1, 1.2, 2) * 0.5 * self._default_font_size
        self.draw_text(
            label,
            text_pos,
            color=self._change_color_brightness(color, 0.7),
            horizontal_alignment=align,
            font_size=font_size,
        )

    def overlay_rotated_instances(
        self, boxes: Any = None, labels: Sequence[str] | None = None, assigned_colors: Sequence[Any] | None = None
    ) -> VisImage:
        """Draw rotated boxes (``(N, 5)`` XYWHA_ABS array or :class:`RotatedBoxes`), larger ones first.

        Args:
            boxes: the rotated boxes.
            labels: ``N`` strings.
            assigned_colors: ``N`` matplotlib colours; default: distinct palette colours.
        """
        if boxes is None:
            return self.output
        boxes = self._convert_boxes(boxes)
        if len(boxes) == 0:
            return self.output
        if boxes.shape[1] != 5:
            raise ValueError(f"overlay_rotated_instances: `boxes` must be (N, 5), got {boxes.shape}.")
        if assigned_colors is None:
            assigned_colors = self._instance_colors(len(boxes))
        for i in np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable").tolist():
            self.draw_rotated_box_with_label(
                boxes[i], edge_color=assigned_colors[i], label=labels[i] if labels is not None else None
            )
        return self.output

    def draw_and_connect_keypoints(self, keypoints: np.ndarray | torch.Tensor) -> VisImage:
        """Draw one instance's keypoints (``(K, 3)``: x, y, score) above ``keypoint_threshold`` as red dots,
        joined by the ``keypoint_connection_rules`` of metadata (``(name0, name1, (r, g, b))``, 0..255), plus
        nose to mid-shoulder and mid-shoulder to mid-hip when those COCO names exist."""
        kps = keypoints.detach().cpu().numpy() if isinstance(keypoints, torch.Tensor) else np.asarray(keypoints)
        names = _meta_get(self.metadata, "keypoint_names")
        if names is not None and len(names) != len(kps):
            raise ValueError(
                f"draw_and_connect_keypoints: {len(kps)} keypoints but metadata keypoint_names has {len(names)}."
            )
        visible: dict[str, tuple[float, float]] = {}
        for idx, (x, y, prob) in enumerate(kps.tolist()):
            if prob > self.keypoint_threshold:
                self.draw_circle((x, y), color=_RED)
                if names is not None:
                    visible[names[idx]] = (x, y)
        for rule in _meta_get(self.metadata, "keypoint_connection_rules") or []:
            kp0, kp1, color = rule
            if kp0 in visible and kp1 in visible:
                (x0, y0), (x1, y1) = visible[kp0], visible[kp1]
                self.draw_line([x0, x1], [y0, y1], color=tuple(c / 255.0 for c in color))
        shoulders = [visible.get("left_shoulder"), visible.get("right_shoulder")]
        if None not in shoulders:
            mid_shoulder = tuple((a + b) / 2 for a, b in zip(*shoulders))
            if "nose" in visible:
                nose = visible["nose"]
                self.draw_line([nose[0], mid_shoulder[0]], [nose[1], mid_shoulder[1]], color=_RED)
            hips = [visible.get("left_hip"), visible.get("right_hip")]
            if None not in hips:
                mid_hip = tuple((a + b) / 2 for a, b in zip(*hips))
                self.draw_line([mid_hip[0], mid_shoulder[0]], [mid_hip[1], mid_shoulder[1]], color=_RED)
        return self.output

    def draw_text(
        self,
        text: str,
        position: tuple[float, float],
        *,
        font_size: float | None = None,
        color: Any = "g",
        horizontal_alignment: str = "center",
        rotation: float = 0,
    ) -> VisImage:
        """Draw ``text`` on a dark box, its top at ``position`` (x, y).

        Args:
            font_size: in points before ``scale``; default ``max(sqrt(H * W) // 90, 10 // scale)``.
            color: text colour, brightened if too dark to read.
            horizontal_alignment: "left", "center" or "right".
            rotation: counter-clockwise, in degrees.
        """
        import matplotlib.colors as mplc

        if font_size is None:
            font_size = self._default_font_size
        rgb = np.maximum(np.asarray(mplc.to_rgb(color)), 0.2)
        rgb[np.argmax(rgb)] = max(0.8, float(np.max(rgb)))
        x, y = position
        self.output.ax.text(
            x,
            y,
            text,
            size=font_size * self.output.scale,
            family="sans-serif",
            bbox={"facecolor": "black", "alpha": 0.8, "pad": 0.7, "edgecolor": "none"},
            verticalalignment="top",
            horizontalalignment=horizontal_alignment,
            color=tuple(rgb),
            zorder=10,
            rotation=rotation,
        )
        return self.output

    def draw_box(
        self, box_coord: Sequence[float], alpha: float = 0.5, edge_color: Any = "g", line_style: str = "-"
    ) -> VisImage:
        """Draw the outline of box ``(x0, y0, x1, y1)``."""
        import matplotlib.patches as mpatches

        x0, y0, x1, y1 = (float(v) for v in box_coord)
        linewidth = max(self._default_font_size / 4, 1)
        self.output.ax.add_patch(
            mpatches.Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=edge_color,
                linewidth=linewidth * self.output.scale,
                alpha=alpha,
                linestyle=line_style,
            )
        )
        return self.output

    def draw_rotated_box_with_label(
        self,
        rotated_box: Sequence[float],
        alpha: float = 0.5,
        edge_color: Any = "g",
        line_style: str = "-",
        label: str | None = None,
    ) -> VisImage:
        """Draw rotated box ``(cx, cy, w, h, angle)`` (degrees, counter-clockwise on screen); its top edge
        (the one at ``-h/2`` before rotation) is dashed, and ``label`` sits at its top-left corner."""
        cx, cy, w, h, angle = (float(v) for v in rotated_box)
        small = w * h < _SMALL_OBJECT_AREA_THRESH * self.output.scale
        linewidth = self._default_font_size / (6 if small else 3)
        theta = math.radians(angle)
        c, s = math.cos(theta), math.sin(theta)
        corners = [(-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2)]
        pts = [(s * yy + c * xx + cx, c * yy - s * xx + cy) for xx, yy in corners]
        for k in range(4):
            j = (k + 1) % 4
            self.draw_line(
                [pts[k][0], pts[j][0]],
                [pts[k][1], pts[j][1]],
                color=edge_color,
                linestyle="--" if k == 1 else line_style,
                linewidth=linewidth,
            )
        if label is not None:
            height_ratio = h / np.sqrt(self.output.height * self.output.width)
            font_size = np.clip((height_ratio - 0.02) / 0.08 + 1, 1.2, 2) * 0.5 * self._default_font_size
            self.draw_text(
                label, pts[1], color=self._change_color_brightness(edge_color, 0.7), font_size=font_size, rotation=angle
            )
        return self.output

    def draw_circle(self, circle_coord: Sequence[float], color: Any, radius: float = 3) -> VisImage:
        """Draw a filled circle of ``radius`` pixels centred at ``(x, y)``, above lines and shapes."""
        import matplotlib.patches as mpatches

        x, y = circle_coord
        self.output.ax.add_patch(mpatches.Circle((float(x), float(y)), radius=radius, fill=True, color=color, zorder=3))
        return self.output

    def draw_line(
        self,
        x_data: Sequence[float],
        y_data: Sequence[float],
        color: Any,
        linestyle: str = "-",
        linewidth: float | None = None,
    ) -> VisImage:
        """Draw a polyline through points ``(x_data[i], y_data[i])``; ``linewidth`` in points before scale."""
        from matplotlib.lines import Line2D

        if linewidth is None:
            linewidth = self._default_font_size / 3
        linewidth = max(linewidth, 1)
        self.output.ax.add_line(
            Line2D(x_data, y_data, linewidth=linewidth * self.output.scale, color=color, linestyle=linestyle)
        )
        return self.output

    def draw_binary_mask(
        self,
        binary_mask: np.ndarray | torch.Tensor,
        color: Any = None,
        *,
        edge_color: Any = None,
        text: str | None = None,
        alpha: float = 0.5,
        area_threshold: float | None = 10,
    ) -> VisImage:
        """Fill a ``(H, W)`` binary mask with ``color`` (default: a random palette colour) and outline it.

        Args:
            edge_color: outline colour (default: derived from ``color``).
            text: drawn at the centre of the largest connected region (and of any very large one).
            alpha: fill opacity.
            area_threshold: polygons smaller than this many pixels are skipped.
        """
        import matplotlib.colors as mplc

        if color is None:
            color = random_color(rgb=True, maximum=1)
        color = mplc.to_rgb(color)
        mask = GenericMask(binary_mask, self.output.height, self.output.width)
        drawn = self._draw_generic_mask(
            mask, color, edge_color=edge_color, alpha=alpha, area_threshold=area_threshold or 0
        )
        if text is not None and drawn:
            self._draw_text_in_mask(mask.mask > 0, text, self._change_color_brightness(color, 0.7))
        return self.output

    def draw_soft_mask(
        self, soft_mask: np.ndarray | torch.Tensor, color: Any = None, *, text: str | None = None, alpha: float = 0.5
    ) -> VisImage:
        """Overlay ``color`` with per-pixel opacity ``soft_mask * alpha`` (``soft_mask``: ``(H, W)`` in 0..1);
        ``text`` goes on the largest region where ``soft_mask > 0.5``."""
        import matplotlib.colors as mplc

        soft = soft_mask.detach().cpu().numpy() if isinstance(soft_mask, torch.Tensor) else np.asarray(soft_mask)
        if soft.shape != (self.output.height, self.output.width):
            raise ValueError(
                f"draw_soft_mask: `soft_mask` has shape {soft.shape}, expected the image size "
                f"({self.output.height}, {self.output.width})."
            )
        if color is None:
            color = random_color(rgb=True, maximum=1)
        color = mplc.to_rgb(color)
        rgba = np.zeros(soft.shape + (4,), dtype=np.float32)
        rgba[:, :, :3] = color
        rgba[:, :, 3] = np.clip(soft, 0, 1) * alpha
        self.output.ax.imshow(rgba, extent=(0, self.output.width, self.output.height, 0), interpolation="nearest")
        if text is not None:
            self._draw_text_in_mask(soft > 0.5, text, self._change_color_brightness(color, 0.7))
        return self.output

    def draw_polygon(
        self, segment: np.ndarray | Sequence[Sequence[float]], color: Any, edge_color: Any = None, alpha: float = 0.5
    ) -> VisImage:
        """Fill polygon ``segment`` (``(K, 2)`` points) with ``color`` at opacity ``alpha`` and outline it
        (default outline: ``color``, darkened when ``alpha > 0.8``)."""
        import matplotlib.colors as mplc
        import matplotlib.patches as mpatches

        segment = np.asarray(segment, dtype=np.float64)
        if segment.ndim != 2 or segment.shape[1] != 2 or len(segment) < 3:
            raise ValueError(f"draw_polygon: `segment` must be (K, 2) with K >= 3, got shape {segment.shape}.")
        if edge_color is None:
            edge_color = self._change_color_brightness(color, -0.7) if alpha > 0.8 else color
        self.output.ax.add_patch(
            mpatches.Polygon(
                segment,
                fill=True,
                facecolor=mplc.to_rgb(color) + (alpha,),
                edgecolor=mplc.to_rgb(edge_color) + (1,),
                linewidth=max(self._default_font_size // 15 * self.output.scale, 1),
            )
        )
        return self.output

    def get_output(self) -> VisImage:
        """The :class:`VisImage` drawn on so far."""
        return self.output

    def _draw_generic_mask(
        self, mask: GenericMask, color: Any, *, edge_color: Any = None, alpha: float = 0.5, area_threshold: float = 0
    ) -> bool:
        """Draw one mask; polygons when it has no holes, else a coloured bitmap plus outlines. Returns whether
        anything was drawn."""
        import matplotlib.colors as mplc

        if not mask.has_holes:
            drawn = False
            for p in mask.polygons:
                pts = p.reshape(-1, 2)
                if polygon_area(pts[:, 0], pts[:, 1]) < area_threshold:
                    continue
                self.draw_polygon(pts, color, edge_color=edge_color, alpha=alpha)
                drawn = True
            return drawn
        if mask.area() < max(area_threshold, 1):
            return False
        rgba = np.zeros((mask.height, mask.width, 4), dtype=np.float32)
        rgba[:, :, :3] = mplc.to_rgb(color)
        rgba[:, :, 3] = (mask.mask > 0) * alpha
        self.output.ax.imshow(rgba, extent=(0, self.output.width, self.output.height, 0), interpolation="nearest")
        outline = edge_color if edge_color is not None else color
        for p in mask.polygons:
            pts = p.reshape(-1, 2)
            self.draw_line(
                np.append(pts[:, 0], pts[0, 0]),
                np.append(pts[:, 1], pts[0, 1]),
                color=outline,
                linewidth=max(self._default_font_size // 15, 1),
            )
        return True

    def _draw_text_in_mask(self, mask: np.ndarray, text: str, color: Any) -> None:
        from scipy import ndimage

        components, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if n == 0:
            return
        sizes = np.bincount(components.reshape(-1))[1:]
        largest = int(np.argmax(sizes)) + 1
        for cid in range(1, n + 1):
            if cid == largest or sizes[cid - 1] > _LARGE_MASK_AREA_THRESH:
                ys, xs = np.nonzero(components == cid)
                self.draw_text(text, (float(np.median(xs)), float(np.median(ys))), color=color)

    def _instance_colors(self, n: int) -> list[np.ndarray]:
        palette = colormap(rgb=True, maximum=1)
        return [palette[i % len(palette)] for i in range(n)]

    def _class_colors(self, class_ids: Sequence[int], jitter: bool) -> list[np.ndarray]:
        thing_colors = _meta_get(self.metadata, "thing_colors")
        palette = colormap(rgb=True, maximum=1)
        out = []
        for c in class_ids:
            c = int(c)
            if thing_colors is not None:
                if not 0 <= c < len(thing_colors):
                    raise ValueError(
                        f"Visualizer: class id {c} is outside metadata thing_colors ({len(thing_colors)} colours)."
                    )
                base = np.asarray(thing_colors[c], dtype=np.float64) / 255.0
            else:
                base = palette[c % len(palette)].astype(np.float64)
            out.append(self._jitter(base) if jitter else base)
        return out

    def _stuff_color(self, label: int) -> np.ndarray:
        stuff_colors = _meta_get(self.metadata, "stuff_colors")
        if stuff_colors is not None and 0 <= label < len(stuff_colors):
            return np.asarray(stuff_colors[label], dtype=np.float64) / 255.0
        palette = colormap(rgb=True, maximum=1)
        return palette[label % len(palette)].astype(np.float64)

    def _jitter(self, color: Any) -> np.ndarray:
        """Move ``color`` (RGB in 0..1) by 0.3 in a random direction, so that same-class instances differ."""
        import matplotlib.colors as mplc

        direction = self._rng.random(3) - 0.5
        direction = direction / max(np.linalg.norm(direction), 1e-6) * 0.3
        return np.clip(np.asarray(mplc.to_rgb(color)) + direction, 0, 1)

    def _create_grayscale_image(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The image in grey, except where ``mask`` (``(H, W)`` bool) is set."""
        grey = self.img.astype(np.float32).mean(axis=2)
        out = np.stack([grey] * 3, axis=2)
        if mask is not None:
            out[mask] = self.img[mask]
        return out

    def _change_color_brightness(self, color: Any, brightness_factor: float) -> tuple[float, float, float]:
        """Scale the lightness of ``color`` by ``1 + brightness_factor`` (factor in [-1, 1])."""
        import matplotlib.colors as mplc

        if not -1.0 <= brightness_factor <= 1.0:
            raise ValueError(f"brightness_factor must be in [-1, 1], got {brightness_factor}.")
        hue, light, sat = colorsys.rgb_to_hls(*mplc.to_rgb(color))
        light = min(max(light * (1.0 + brightness_factor), 0.0), 1.0)
        return colorsys.hls_to_rgb(hue, light, sat)

    def _union(self, masks: list[GenericMask] | None) -> np.ndarray | None:
        if not masks:
            return None
        return np.any(np.stack([m.mask > 0 for m in masks]), axis=0)

    def _read_png(self, path: str, mode: str) -> np.ndarray:
        from PIL import Image

        with PathManager.open(path, "rb") as f:
            return np.asarray(Image.open(f).convert(mode))

    def _convert_boxes(self, boxes: Any) -> np.ndarray:
        if isinstance(boxes, (Boxes, RotatedBoxes)):
            arr = boxes.tensor.detach().cpu().numpy()
        elif isinstance(boxes, torch.Tensor):
            arr = boxes.detach().cpu().numpy()
        else:
            arr = np.asarray(boxes, dtype=np.float64)
        if arr.size == 0:
            return arr.reshape(0, 4).astype(np.float64)
        if arr.ndim != 2 or arr.shape[1] not in (4, 5):
            raise ValueError(f"Visualizer: boxes must be (N, 4) XYXY or (N, 5) XYWHA, got shape {arr.shape}.")
        return arr.astype(np.float64)

    def _convert_masks(self, masks: Any) -> list[GenericMask]:
        if isinstance(masks, ROIMasks):
            raise TypeError("Visualizer: ROIMasks must be pasted into the image first (ROIMasks.to_bitmasks).")
        if isinstance(masks, PolygonMasks):
            masks = masks.polygons
        elif isinstance(masks, BitMasks):
            masks = masks.tensor
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().cpu().numpy()
        if isinstance(masks, np.ndarray):
            if masks.ndim != 3:
                raise ValueError(f"Visualizer: masks must be (N, H, W), got shape {masks.shape}.")
            masks = list(masks)
        out = []
        for i, m in enumerate(masks):
            if isinstance(m, GenericMask):
                out.append(m)
                continue
            try:
                out.append(GenericMask(m, self.output.height, self.output.width))
            except (ValueError, TypeError) as e:
                raise type(e)(f"mask of instance {i}: {e}") from None
        return out

    def _convert_keypoints(self, keypoints: Any) -> np.ndarray:
        if isinstance(keypoints, Keypoints):
            keypoints = keypoints.tensor
        if isinstance(keypoints, torch.Tensor):
            keypoints = keypoints.detach().cpu().numpy()
        arr = np.asarray(keypoints, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"Visualizer: keypoints must be (N, K, 3), got shape {arr.shape}.")
        return arr
