"""Pascal VOC detection AP (VOC2007 11-point or area under the PR curve), read from VOC's XML files."""

from __future__ import annotations

import functools
import logging
import os
import xml.etree.ElementTree as ET
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from libdet.data.catalog import MetadataCatalog
from libdet.utils import comm
from libdet.utils.file_io import PathManager

from .evaluator import DatasetEvaluator

__all__ = ["PascalVOCDetectionEvaluator", "voc_ap", "voc_eval", "parse_rec"]

logger = logging.getLogger(__name__)


@functools.cache
def parse_rec(filename: str) -> list[dict]:
    """Objects of a VOC annotation XML: ``{"name", "difficult", "bbox": [x1, y1, x2, y2]}`` (1-based pixels)."""
    with PathManager.open(filename) as f:
        tree = ET.parse(f)
    objects = []
    for obj in tree.findall("object"):
        bbox = obj.find("bndbox")
        difficult = obj.find("difficult")
        name = obj.find("name")
        if bbox is None or name is None:
            raise ValueError(f"{filename}: an <object> lacks <name> or <bndbox>.")
        objects.append(
            {
                "name": name.text,
                "difficult": int(difficult.text) if difficult is not None else 0,
                "bbox": [float(bbox.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")],
            }
        )
    return objects


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision from a recall/precision curve.

    Args:
        rec: ``[D]`` cumulative recall after each detection (sorted by decreasing score).
        prec: ``[D]`` cumulative precision.
        use_07_metric: VOC2007's mean of the max precision at recall >= 0, 0.1, ..., 1 (11 points);
            otherwise the exact area under the monotone (upper envelope) precision curve.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = prec[rec >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    change = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def voc_eval(
    detections: Sequence[tuple[str, float, Sequence[float]]],
    annotations: dict[str, list[dict]],
    classname: str,
    ovthresh: float = 0.5,
    use_07_metric: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Precision, recall and AP of one class.

    Args:
        detections: ``(image_id, score, [x1, y1, x2, y2])`` of this class, VOC 1-based inclusive pixels.
        annotations: ``{image_id: objects}`` as returned by :func:`parse_rec`, for every evaluated image.
        classname: the class to evaluate.
        ovthresh: a detection is a true positive when its IoU with an unmatched gt is > ``ovthresh``.
        use_07_metric: see :func:`voc_ap`.

    Difficult objects are neither counted as positives nor penalize a detection matching them.
    """
    gts = {}
    npos = 0
    for image_id, objects in annotations.items():
        objs = [o for o in objects if o["name"] == classname]
        boxes = np.array([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4)
        difficult = np.array([bool(o["difficult"]) for o in objs], dtype=bool)
        npos += int((~difficult).sum())
        gts[image_id] = {"bbox": boxes, "difficult": difficult, "matched": np.zeros(len(objs), dtype=bool)}

    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for d, i in enumerate(order):
        image_id, _, box = detections[i]
        if image_id not in gts:
            raise ValueError(f"voc_eval: detection for image {image_id!r} which has no annotation.")
        gt = gts[image_id]
        box = np.asarray(box, dtype=np.float64)
        best, best_j = -np.inf, -1
        if len(gt["bbox"]):
            g = gt["bbox"]
            iw = np.maximum(np.minimum(g[:, 2], box[2]) - np.maximum(g[:, 0], box[0]) + 1.0, 0.0)
            ih = np.maximum(np.minimum(g[:, 3], box[3]) - np.maximum(g[:, 1], box[1]) + 1.0, 0.0)
            inter = iw * ih
            union = (
                (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
                + (g[:, 2] - g[:, 0] + 1.0) * (g[:, 3] - g[:, 1] + 1.0)
                - inter
            )
            overlaps = inter / union
            best_j = int(np.argmax(overlaps))
            best = overlaps[best_j]
        if best > ovthresh:
            if gt["difficult"][best_j]:
                continue
            if not gt["matched"][best_j]:
                tp[d] = 1.0
                gt["matched"][best_j] = True
            else:
                fp[d] = 1.0
        else:
            fp[d] = 1.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / float(npos) if npos > 0 else np.zeros_like(tp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, voc_ap(rec, prec, use_07_metric)


class PascalVOCDetectionEvaluator(DatasetEvaluator):
    """Box AP on a Pascal VOC split: AP (mean over IoU 0.50:0.95), AP50 and AP75, each the mean over classes.

    The VOC2007 11-point metric is used when the dataset's ``year`` is 2007, the area metric otherwise.
    """

    def __init__(self, dataset_name: str, *, distributed: bool = True):
        """
        Args:
            dataset_name: registered dataset; metadata gives ``dirname`` (with ``Annotations/`` and
                ``ImageSets/Main/``), ``split``, ``year`` and ``thing_classes`` (looked up on first use).
            distributed: gather detections from all ranks; only the main process returns results.
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._predictions: dict[int, list[tuple[str, float, list[float]]]] = defaultdict(list)

    @property
    def _metadata(self) -> Any:
        meta = MetadataCatalog.get(self._dataset_name)
        for key in ("dirname", "split", "year", "thing_classes"):
            if meta.get(key) is None:
                raise ValueError(
                    f"PascalVOCDetectionEvaluator: dataset {self._dataset_name!r} has no {key!r} metadata."
                )
        return meta

    def reset(self) -> None:
        self._predictions = defaultdict(list)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Keep each detection as (image_id, score, box) per class, boxes in VOC's 1-based convention."""
        for input, output in zip(inputs, outputs):
            image_id = input["image_id"]
            instances = output["instances"].to("cpu")
            boxes = instances.pred_boxes.tensor.double().numpy()
            scores = instances.scores.double().numpy()
            classes = instances.pred_classes.numpy()
            if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
                raise ValueError(f"PascalVOCDetectionEvaluator: image {image_id!r} has non-finite boxes or scores.")
            for box, score, cls in zip(boxes, scores, classes):
                x1, y1, x2, y2 = box.tolist()
                # VOC pixel indices are 1-based and boxes inclusive.
                self._predictions[int(cls)].append((image_id, float(score), [x1 + 1, y1 + 1, x2, y2]))

    def evaluate(self) -> dict | None:
        """Returns ``{"bbox": {"AP", "AP50", "AP75"}}`` in percent."""
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(dict(predictions), dst=0)
            if not comm.is_main_process():
                return {}
            predictions = defaultdict(list)
            for part in gathered:
                for cls, dets in part.items():
                    predictions[cls].extend(dets)
        meta = self._metadata
        class_names = list(meta.thing_classes)
        for cls in predictions:
            if not 0 <= cls < len(class_names):
                raise ValueError(f"PascalVOCDetectionEvaluator: predicted class {cls} outside [0, {len(class_names)}).")
        with PathManager.open(os.path.join(meta.dirname, "ImageSets", "Main", meta.split + ".txt")) as f:
            image_ids = [line.strip() for line in f if line.strip()]
        annotations = {i: parse_rec(os.path.join(meta.dirname, "Annotations", i + ".xml")) for i in image_ids}
        use_07_metric = int(meta.year) == 2007
        logger.info(
            f"Evaluating {self._dataset_name} using {meta.year} metric "
            f"({'11-point' if use_07_metric else 'area'}); results do not use the official Matlab code."
        )
        aps: dict[int, list[float]] = defaultdict(list)  # IoU threshold (percent) -> per-class APs
        for cls_id, cls_name in enumerate(class_names):
            dets = predictions.get(cls_id, [])
            for thresh in range(50, 100, 5):
                _, _, ap = voc_eval(dets, annotations, cls_name, ovthresh=thresh / 100.0, use_07_metric=use_07_metric)
                aps[thresh].append(ap * 100)
        mean_ap = {t: float(np.mean(v)) for t, v in aps.items()}
        ret = OrderedDict()
        ret["bbox"] = {"AP": float(np.mean(list(mean_ap.values()))), "AP50": mean_ap[50], "AP75": mean_ap[75]}
        return ret
