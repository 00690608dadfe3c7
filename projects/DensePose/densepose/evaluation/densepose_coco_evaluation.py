"""COCO-style DensePose evaluation: AP / AR over GPS, GPSm or mask-IoU matching of detections to people.

Per (detection, annotated person) pair:

- **GPS**: the person's annotated points are looked up in the detection's chart result (box-relative point
  ``dp_x * w / 255`` as detectron2's evaluator does, integer pixel), the estimated (part, U, V) compared with the
  annotated one by geodesic distance ``d`` and scored ``exp(-d^2 / (2 kappa_part^2))``; GPS is the mean over the
  person's points (a point outside the detection's box or on its background scores 0).
- **GPSm**: ``sqrt(GPS * IoU)``, IoU between the detection's foreground mask and the person's ``dp_masks``
  foreground (both pasted in the image).
- **IoU** (``segm``): the mask IoU alone.

Matching and AP/AR follow COCO with thresholds 0.50:0.05:0.95, at most 20 detections per image and area ranges
all / medium (32^2-96^2) / large, as detectron2's DensePose evaluator; people without DensePose annotation are
ignored.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from libdet.data import DatasetCatalog
from libdet.evaluation.evaluator import DatasetEvaluator
from libdet.structures import BoxMode

from ..inference.converters import chart_output_to_results
from ..structures.data_relative import DensePoseDataRelative
from .geodesic import gps_normalizers

__all__ = ["DensePoseCOCOEvaluator", "DENSEPOSE_METRICS", "gps_of_pair", "evaluate_densepose"]

logger = logging.getLogger(__name__)

DENSEPOSE_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
_MODES = {"GPS": "densepose_gps", "GPSm": "densepose_gpsm", "IOU": "densepose_segm"}


def gps_of_pair(gt: dict, det: dict, distances) -> float:
    """GPS of one detection for one annotated person.

    Args:
        gt: ``bbox`` (XYWH) and ``dp_x, dp_y, dp_I, dp_U, dp_V``.
        det: ``bbox`` (XYWH), ``labels`` ``(h, w)`` and ``uv`` ``(2, h, w)`` over its integer box.
        distances: a geodesic distance provider (see :mod:`.geodesic`).
    """
    gx, gy, gw, gh = gt["bbox"]
    labels, uv = det["labels"], det["uv"]
    dy, dx = labels.shape
    px = (np.asarray(gt["dp_x"]) * gw / 255.0 + gx - det["bbox"][0]).astype(int)
    py = (np.asarray(gt["dp_y"]) * gh / 255.0 + gy - det["bbox"][1]).astype(int)
    inside = (px >= 0) & (px < dx) & (py >= 0) & (py < dy)
    if len(px) == 0 or not inside.any():
        return 0.0
    px, py = np.where(inside, px, 0), np.where(inside, py, 0)
    i_est = np.where(inside, labels[py, px], 0)
    u_est, v_est = uv[0, py, px], uv[1, py, px]
    i_gt = np.asarray(gt["dp_I"])
    d = distances(i_gt, np.asarray(gt["dp_U"]), np.asarray(gt["dp_V"]), i_est, u_est, v_est)
    kappa = gps_normalizers(i_gt)
    return float(np.mean(np.exp(-(d**2) / (2 * kappa**2))))


def _gt_mask(gt: dict, image_size: tuple[int, int]) -> np.ndarray:
    """The person's ``dp_masks`` foreground resized (nearest) into its box, in an image-size bool mask."""
    import torch.nn.functional as F

    segm = DensePoseDataRelative({**gt, "dp_masks": gt["dp_masks"]}).segm if "dp_masks" in gt else None
    mask = np.zeros(image_size, bool)
    if segm is None:
        return mask
    x, y, w, h = (int(v) for v in gt["bbox"])
    w, h = max(w, 1), max(h, 1)
    fg = F.interpolate((segm > 0).float()[None, None], (h, w), mode="nearest")[0, 0].numpy() > 0
    _paste(mask, fg, x, y)
    return mask


def _paste(mask: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    height, width = mask.shape
    h, w = patch.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        mask[y0:y1, x0:x1] |= patch[y0 - y : y1 - y, x0 - x : x1 - x]


def _det_mask(det: dict, image_size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(image_size, bool)
    _paste(mask, det["labels"] > 0, int(det["bbox"][0]), int(det["bbox"][1]))
    return mask


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def evaluate_densepose(gt_dataset: dict, detections: list[dict], mode: str, distances=None) -> dict[str, float]:
    """AP/AR (in %) of ``detections`` against a COCO-format dataset dict with DensePose annotations.

    Args:
        gt_dataset: ``{"images": [{"id", "height", "width"}], "annotations": [...], "categories": [...]}``,
            annotations with XYWH ``bbox``, ``area``, ``iscrowd`` and the DensePose keys where annotated.
        detections: dicts with ``image_id``, ``category_id``, ``bbox`` (XYWH), ``score``, ``labels``, ``uv``.
        mode: ``"GPS"``, ``"GPSm"`` or ``"IOU"``.
        distances: geodesic distance provider (needed for GPS / GPSm).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if mode not in _MODES:
        raise ValueError(f"evaluate_densepose: mode must be one of {list(_MODES)}, got {mode!r}.")
    if mode != "IOU" and distances is None:
        raise ValueError(f"evaluate_densepose: mode {mode} needs geodesic `distances`.")
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt_dataset)
    coco_gt.createIndex()
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt_dataset["images"]}
    if not detections:
        return {m: 0.0 for m in DENSEPOSE_METRICS}
    coco_dt = coco_gt.loadRes([dict(d) for d in detections])

    class _Eval(COCOeval):
        def _prepare(self):
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:  # only people with DensePose annotations count
                    g["ignore"] = int(bool(g.get("iscrowd", 0)) or "dp_x" not in g)
                    g["_ignore"] = g["ignore"]

        def computeIoU(self, img_id, cat_id):
            gts, dts = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
            if not gts or not dts:
                return []
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")
            dts = [dts[k] for k in order][: self.params.maxDets[-1]]
            scores = np.zeros((len(dts), len(gts)))
            for a, dt in enumerate(dts):
                for b, gt in enumerate(gts):
                    if "dp_x" not in gt:
                        continue
                    iou = None
                    if mode != "GPS":
                        iou = _mask_iou(_det_mask(dt, sizes[img_id]), _gt_mask(gt, sizes[img_id]))
                    if mode == "IOU":
                        scores[a, b] = iou
                    else:
                        gps = gps_of_pair(gt, dt, distances)
                        scores[a, b] = gps if mode == "GPS" else np.sqrt(gps * iou)
            return scores

    ev = _Eval(coco_gt, coco_dt, iouType="bbox")
    ev.params.maxDets = [20]
    ev.params.areaRng = [[0**2, 1e5**2], [32**2, 96**2], [96**2, 1e5**2]]
    ev.params.areaRngLbl = ["all", "medium", "large"]
    ev.evaluate()
    ev.accumulate()
    return _summarize(ev)


def _summarize(ev) -> dict[str, float]:
    """The 10 numbers of :data:`DENSEPOSE_METRICS` (in %), -1 entries (no gt) read as 0 like COCO's nan."""
    precision, recall = ev.eval["precision"], ev.eval["recall"]  # (T, R, K, A, M), (T, K, A, M)
    thrs = ev.params.iouThrs

    def ap(area: int, thr: float | None = None) -> float:
        p = precision[:, :, :, area, -1]
        if thr is not None:
            p = p[np.where(np.isclose(thrs, thr))[0]]
        p = p[p > -1]
        return float(np.mean(p)) * 100 if p.size else float("nan")

    def ar(area: int, thr: float | None = None) -> float:
        r = recall[:, :, area, -1]
        if thr is not None:
            r = r[np.where(np.isclose(thrs, thr))[0]]
        r = r[r > -1]
        return float(np.mean(r)) * 100 if r.size else float("nan")

    values = [ap(0), ap(0, 0.5), ap(0, 0.75), ap(1), ap(2), ar(0), ar(0, 0.5), ar(0, 0.75), ar(1), ar(2)]
    return dict(zip(DENSEPOSE_METRICS, values))


class DensePoseCOCOEvaluator(DatasetEvaluator):
    """Evaluates ``pred_densepose`` of a DensePose model on a registered dataset with DensePose annotations:
    returns ``{"densepose_gps": {AP, ...}, "densepose_gpsm": {...}, "densepose_segm": {...}}`` for the modes asked
    (GPS modes need geodesic distances: :class:`SMPLGeodesicDistances` for COCO, :class:`ChartGeodesicDistances`
    for the synthetic set)."""

    def __init__(
        self,
        dataset_name: str,
        *,
        distances=None,
        modes: tuple[str, ...] = ("GPS", "GPSm", "IOU"),
        min_score: float = 0.0,
    ):
        """
        Args:
            dataset_name: a registered dataset whose dicts have DensePose annotations.
            distances: geodesic distance provider (required for GPS / GPSm).
            modes: among ``"GPS"``, ``"GPSm"``, ``"IOU"``.
            min_score: detections scoring less are not evaluated.
        """
        unknown = [m for m in modes if m not in _MODES]
        if unknown:
            raise ValueError(f"DensePoseCOCOEvaluator: unknown modes {unknown}; choose from {list(_MODES)}.")
        if distances is None and any(m != "IOU" for m in modes):
            raise ValueError("DensePoseCOCOEvaluator: GPS and GPSm need `distances` (geodesic distances).")
        self.dataset_name = dataset_name
        self.distances = distances
        self.modes = tuple(modes)
        self.min_score = min_score
        self.reset()

    def reset(self) -> None:
        self._detections: list[dict] = []

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            inst = inst[inst.scores >= self.min_score]
            if len(inst) == 0 or not inst.has("pred_densepose"):
                continue
            results = chart_output_to_results(inst.pred_densepose, inst.pred_boxes)
            boxes = BoxMode.convert(inst.pred_boxes.tensor.clone(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            for k, r in enumerate(results):
                self._detections.append(
                    {
                        "image_id": inp["image_id"],
                        "category_id": 1,
                        "bbox": [float(v) for v in boxes[k]],
                        "score": float(inst.scores[k]),
                        "labels": r.labels.numpy().astype(np.uint8),
                        "uv": r.uv.numpy().astype(np.float32),
                    }
                )

    def _gt_dataset(self) -> dict:
        images, annotations = [], []
        for d in DatasetCatalog.get(self.dataset_name):
            images.append({"id": d["image_id"], "height": d["height"], "width": d["width"]})
            for a in d.get("annotations", []):
                bbox = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
                ann = {k: a[k] for k in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "dp_masks") if k in a}
                ann.update(
                    id=len(annotations) + 1,
                    image_id=d["image_id"],
                    category_id=1,
                    bbox=[float(v) for v in bbox],
                    area=float(bbox[2] * bbox[3]),
                    iscrowd=int(a.get("iscrowd", 0)),
                )
                annotations.append(ann)
        return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}

    def evaluate(self) -> dict[str, dict[str, float]]:
        from libdet.utils import comm

        detections = comm.gather(self._detections, dst=0)
        if not comm.is_main_process():
            return {}
        detections = [d for part in detections for d in part]
        gt = self._gt_dataset()
        results = OrderedDict()
        for mode in self.modes:
            results[_MODES[mode]] = evaluate_densepose(gt, detections, mode, self.distances)
            logger.info(f"DensePose {mode} on {self.dataset_name}: {results[_MODES[mode]]}")
        return results
