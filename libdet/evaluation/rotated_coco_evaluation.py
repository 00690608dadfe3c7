"""COCO-style box AP for rotated boxes: pycocotools' COCOeval with a rotated-IoU ``computeIoU``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval

from libdet.structures import RotatedBoxes, pairwise_iou_rotated

from .coco_evaluation import COCOEvaluator

__all__ = ["RotatedCOCOEvaluator", "RotatedCOCOeval"]


def _to_xywha(boxes: Sequence[Sequence[float]], what: str) -> torch.Tensor:
    """COCO json boxes to ``[N, 5]`` (cx, cy, w, h, angle in degrees).

    4-value boxes are axis-aligned XYWH (top-left corner); 5-value boxes are already XYWHA (center).
    """
    out = torch.zeros((len(boxes), 5), dtype=torch.float64)
    for i, box in enumerate(boxes):
        if len(box) == 4:
            x, y, w, h = box
            out[i] = torch.tensor([x + w / 2.0, y + h / 2.0, w, h, 0.0], dtype=torch.float64)
        elif len(box) == 5:
            out[i] = torch.tensor(box, dtype=torch.float64)
        else:
            raise ValueError(f"RotatedCOCOeval: {what} box {i} has {len(box)} values, expected 4 (XYWH) or 5 (XYWHA).")
    return out


class RotatedCOCOeval(COCOeval):
    """``COCOeval`` whose box IoU is the IoU of rotated boxes (``pairwise_iou_rotated``)."""

    def computeIoU(self, imgId: Any, catId: Any) -> np.ndarray | list:  # noqa: N802 - pycocotools' name
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        if p.iouType != "bbox":
            raise ValueError(f"RotatedCOCOeval supports iouType 'bbox' only, got {p.iouType!r}.")
        crowd = [g for g in gt if g.get("iscrowd", 0)]
        if crowd:
            raise ValueError(
                f"RotatedCOCOeval: image {imgId} has crowd annotations (ids {[g.get('id') for g in crowd]}), whose "
                f"IoU is undefined for rotated boxes."
            )
        if len(gt) == 0 or len(dt) == 0:
            return []
        d = RotatedBoxes(_to_xywha([x["bbox"] for x in dt], "detection").float())
        g = RotatedBoxes(_to_xywha([x["bbox"] for x in gt], "ground-truth").float())
        return pairwise_iou_rotated(d, g).double().numpy()


class RotatedCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` for rotated boxes: ``pred_boxes`` are ``RotatedBoxes`` ``[N, 5]`` (cx, cy, w, h, a).

    Ground-truth boxes may be XYWH (axis-aligned) or XYWHA. Only the ``bbox`` task is evaluated.
    """

    _cocoeval_class = RotatedCOCOeval

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
        allow_cached_coco: bool = True,
    ):
        """
        Args:
            dataset_name, distributed, output_dir, max_dets_per_image, allow_cached_coco: as for
                :class:`COCOEvaluator`.
            tasks: must be None or ``("bbox",)``.
        """
        if tasks is not None and tuple(tasks) != ("bbox",):
            raise ValueError(f"RotatedCOCOEvaluator only evaluates ('bbox',), got tasks={tuple(tasks)}.")
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,
            allow_cached_coco=allow_cached_coco,
        )

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Like :meth:`COCOEvaluator.process`; masks and keypoints of the outputs are ignored."""
        stripped = []
        for output in outputs:
            if "instances" in output:
                instances = output["instances"]
                keep = {
                    k: v for k, v in instances.get_fields().items() if k in ("pred_boxes", "scores", "pred_classes")
                }
                output = {**output, "instances": type(instances)(instances.image_size, **keep)}
            stripped.append(output)
        super().process(inputs, stripped)
