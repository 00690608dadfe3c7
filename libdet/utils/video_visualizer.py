"""Draw predictions on consecutive video frames with colours that follow each object from frame to frame.

Follows ``detectron2.utils.video_visualizer``. Each frame's instances are matched one-to-one to the instances
seen in recent frames (greedily by mask IoU when masks exist, else box IoU, same class only, IoU >= 0.5); a
matched instance keeps its colour, an unmatched one gets the most distinct palette colour not in use, and an
instance not seen for ``ttl`` frames is forgotten. Instances carrying an ``ID`` field (from a tracker) are
coloured by that ID instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from libdet.structures import Boxes, Instances, pairwise_iou

from .colormap import colormap
from .visualizer import (
    _OFF_WHITE,
    ColorMode,
    GenericMask,
    VisImage,
    Visualizer,
    _create_text_labels,
    _meta_get,
    _PanopticPrediction,
)

__all__ = ["VideoVisualizer"]


@dataclass
class _DetectedInstance:
    """An instance remembered across frames: class, box ``(4,)`` XYXY or None, mask RLE or None, colour."""

    label: int | None
    bbox: np.ndarray | None
    mask_rle: dict[str, Any] | None
    color: np.ndarray | None
    ttl: int


class VideoVisualizer:
    """Visualizer for a stream of frames that keeps instance colours consistent over time."""

    def __init__(
        self, metadata: Any, instance_mode: ColorMode = ColorMode.IMAGE, *, ttl: int = 8, iou_threshold: float = 0.5
    ):
        """
        Args:
            metadata: dataset metadata (attributes or dict), as for :class:`Visualizer`.
            instance_mode: IMAGE or IMAGE_BW (SEGMENTATION colours would defeat per-object tracking).
            ttl: frames an unmatched instance is remembered for.
            iou_threshold: smallest IoU at which an instance is matched to a remembered one.
        """
        instance_mode = ColorMode(instance_mode)
        if instance_mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            raise ValueError(f"VideoVisualizer: instance_mode must be IMAGE or IMAGE_BW, got {instance_mode}.")
        if ttl < 1:
            raise ValueError(f"VideoVisualizer: `ttl` must be >= 1, got {ttl}.")
        self.metadata = metadata
        self._instance_mode = instance_mode
        self._ttl = ttl
        self._iou_threshold = iou_threshold
        self._old_instances: list[_DetectedInstance] = []
        self._colors_by_id: dict[int, np.ndarray] = {}
        self._last_colors: list[np.ndarray] = []  # colours given to the last frame's instances, in order

    def draw_instance_predictions(self, frame: np.ndarray | torch.Tensor, predictions: Instances) -> VisImage:
        """Draw one frame's predictions (fields as for :meth:`Visualizer.draw_instance_predictions`); boxes are
        left out when masks are drawn, to keep video readable.

        Args:
            frame: ``(H, W, 3)`` RGB frame.
            predictions: the frame's instances.
        """
        if not isinstance(predictions, Instances):
            raise TypeError(f"draw_instance_predictions: expected Instances, got {type(predictions).__name__}.")
        vis = Visualizer(frame, self.metadata)
        predictions = predictions.to(torch.device("cpu"))
        num = len(predictions) if predictions.get_fields() else 0
        if num == 0:
            if self._instance_mode == ColorMode.IMAGE_BW:
                vis.output.reset_image(vis._create_grayscale_image(None))
            self._forget_unmatched(set())
            self._last_colors = []
            return vis.output
        boxes = predictions.pred_boxes.tensor.numpy() if predictions.has("pred_boxes") else None
        scores = predictions.scores.tolist() if predictions.has("scores") else None
        classes = predictions.pred_classes.tolist() if predictions.has("pred_classes") else None
        keypoints = predictions.pred_keypoints if predictions.has("pred_keypoints") else None
        masks = vis._convert_masks(predictions.pred_masks) if predictions.has("pred_masks") else None

        if predictions.has("ID"):
            colors = self._colors_for_ids([int(i) for i in predictions.ID.tolist()])
        else:
            detected = [
                _DetectedInstance(
                    label=classes[i] if classes is not None else None,
                    bbox=boxes[i] if boxes is not None else None,
                    mask_rle=self._encode(masks[i]) if masks is not None else None,
                    color=None,
                    ttl=self._ttl,
                )
                for i in range(num)
            ]
            colors = self._assign_colors(detected)
        self._last_colors = colors
        labels = _create_text_labels(classes, scores, _meta_get(self.metadata, "thing_classes"))
        alpha = 0.5
        if self._instance_mode == ColorMode.IMAGE_BW:
            vis.output.reset_image(vis._create_grayscale_image(vis._union(masks)))
            alpha = 0.3
        return vis.overlay_instances(
            boxes=None if masks is not None else boxes,
            masks=masks,
            labels=labels,
            keypoints=keypoints,
            assigned_colors=colors,
            alpha=alpha,
        )

    def draw_sem_seg(
        self, frame: np.ndarray | torch.Tensor, sem_seg: np.ndarray | torch.Tensor, area_threshold: float | None = None
    ) -> VisImage:
        """Draw a semantic map on ``frame``; class colours are fixed, so no tracking is needed."""
        return Visualizer(frame, self.metadata).draw_sem_seg(sem_seg, area_threshold=area_threshold)

    def draw_panoptic_seg(
        self,
        frame: np.ndarray | torch.Tensor,
        panoptic_seg: np.ndarray | torch.Tensor,
        segments_info: list[dict[str, Any]] | None,
        area_threshold: float | None = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draw a panoptic segmentation on ``frame`` (arguments as :meth:`Visualizer.draw_panoptic_seg`); thing
        segments are matched across frames by mask IoU and keep their colours."""
        vis = Visualizer(frame, self.metadata)
        pred = _PanopticPrediction(panoptic_seg, segments_info, self.metadata)
        if self._instance_mode == ColorMode.IMAGE_BW:
            vis.output.reset_image(vis._create_grayscale_image(pred.non_void_mask()))
        stuff_classes = _meta_get(self.metadata, "stuff_classes")
        for mask, info in pred.stuff_masks():
            c = int(info["category_id"])
            text = str(stuff_classes[c]) if stuff_classes is not None and 0 <= c < len(stuff_classes) else str(c)
            vis.draw_binary_mask(
                mask.astype(np.uint8),
                color=vis._stuff_color(c),
                edge_color=_OFF_WHITE,
                text=text,
                alpha=alpha,
                area_threshold=area_threshold,
            )
        things = list(pred.thing_masks())
        if not things:
            self._forget_unmatched(set())
            return vis.output
        masks = [GenericMask(m.astype(np.uint8), vis.output.height, vis.output.width) for m, _ in things]
        infos = [s for _, s in things]
        category_ids = [int(s["category_id"]) for s in infos]
        detected = [
            _DetectedInstance(label=c, bbox=None, mask_rle=self._encode(m), color=None, ttl=self._ttl)
            for c, m in zip(category_ids, masks)
        ]
        colors = self._assign_colors(detected)
        scores = [float(s["score"]) for s in infos] if all("score" in s for s in infos) else None
        labels = _create_text_labels(
            category_ids, scores, _meta_get(self.metadata, "thing_classes"), [s.get("iscrowd", 0) for s in infos]
        )
        return vis.overlay_instances(masks=masks, labels=labels, assigned_colors=colors, alpha=alpha)

    @staticmethod
    def _encode(mask: GenericMask) -> dict[str, Any]:
        from pycocotools import mask as mask_util

        return mask_util.encode(np.asfortranarray(mask.mask.astype(np.uint8)))

    def _iou_matrix(self, new: list[_DetectedInstance], old: list[_DetectedInstance]) -> np.ndarray:
        """``(len(new), len(old))`` IoU, by masks when both sides have them, else boxes, else zeros."""
        if all(d.mask_rle is not None for d in new + old):
            from pycocotools import mask as mask_util

            ious = mask_util.iou([d.mask_rle for d in new], [d.mask_rle for d in old], [0] * len(old))
            ious = np.asarray(ious, dtype=np.float64).reshape(len(new), len(old))
        elif all(d.bbox is not None for d in new + old):
            ious = pairwise_iou(
                Boxes(torch.as_tensor(np.stack([d.bbox for d in new]), dtype=torch.float64)),
                Boxes(torch.as_tensor(np.stack([d.bbox for d in old]), dtype=torch.float64)),
            ).numpy()
        else:
            ious = np.zeros((len(new), len(old)))
        for i, d in enumerate(new):
            for j, o in enumerate(old):
                if d.label is not None and o.label is not None and d.label != o.label:
                    ious[i, j] = 0.0
        return ious

    def _assign_colors(self, instances: list[_DetectedInstance]) -> list[np.ndarray]:
        """Give each new instance the colour of its match among remembered instances, or a free colour."""
        matched_old = set()
        if self._old_instances and instances:
            ious = self._iou_matrix(instances, self._old_instances)
            order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None, kind="stable"), ious.shape))[0]
            taken_new = set()
            for i, j in order.tolist():
                if ious[i, j] < self._iou_threshold:
                    break
                if i in taken_new or j in matched_old:
                    continue
                instances[i].color = self._old_instances[j].color
                taken_new.add(i)
                matched_old.add(j)
        in_use = [o.color for j, o in enumerate(self._old_instances) if j not in matched_old]
        in_use += [d.color for d in instances if d.color is not None]
        for d in instances:
            if d.color is None:
                d.color = self._free_color(in_use)
                in_use.append(d.color)
        self._forget_unmatched(matched_old)
        self._old_instances = instances + self._old_instances
        return [d.color for d in instances]

    def _forget_unmatched(self, matched_old: set) -> None:
        """Drop the matched remembered instances (their successors replace them) and age the others."""
        kept = []
        for j, o in enumerate(self._old_instances):
            if j in matched_old:
                continue
            o.ttl -= 1
            if o.ttl > 0:
                kept.append(o)
        self._old_instances = kept

    def _colors_for_ids(self, ids: list[int]) -> list[np.ndarray]:
        for i in ids:
            if i not in self._colors_by_id:
                self._colors_by_id[i] = self._free_color(list(self._colors_by_id.values()))
        return [self._colors_by_id[i] for i in ids]

    @staticmethod
    def _free_color(in_use: list[np.ndarray]) -> np.ndarray:
        """The first (most distinct) palette colour not in ``in_use``; the least used one if all are."""
        palette = colormap(rgb=True, maximum=1)
        used = [np.asarray(c, dtype=np.float32) for c in in_use if c is not None]
        if not used:
            return palette[0]
        same = np.abs(palette[:, None, :] - np.stack(used)[None]).max(axis=2) < 1e-6  # (80, len(used))
        return palette[int(np.argmin(same.sum(axis=1)))]
