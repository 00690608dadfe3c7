"""Panoptic quality (PQ = SQ x RQ) on COCO-panoptic-format ground truth, computed natively.

Semantics follow the COCO panoptic evaluation: a predicted and a gt segment of the same category match
when their IoU is > 0.5 (pixels labeled VOID in the gt are removed from the prediction's area for the
union); unmatched non-crowd gt segments are false negatives; an unmatched predicted segment is a false
positive unless more than half of it lies on VOID or on a crowd region of its own category.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from libdet.data.catalog import MetadataCatalog
from libdet.utils import comm
from libdet.utils.file_io import PathManager, atomic_write

from .evaluator import DatasetEvaluator

__all__ = ["COCOPanopticEvaluator", "PQStat", "pq_compute_single_image", "rgb2id", "id2rgb"]

logger = logging.getLogger(__name__)

VOID = 0
_OFFSET = 256 * 256 * 256


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG: ``R + 256 * G + 256**2 * B``; ``[H, W, 3]`` -> ``[H, W]``."""
    color = np.asarray(color, dtype=np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb2id`: ``[H, W]`` ids -> ``[H, W, 3]`` uint8 colors."""
    id_map = np.asarray(id_map, dtype=np.int64)
    return np.stack([id_map % 256, id_map // 256 % 256, id_map // (256 * 256) % 256], axis=-1).astype(np.uint8)


class PQStat:
    """Per-category sums ``tp``, ``fp``, ``fn`` and ``iou`` (IoU of the true positives)."""

    def __init__(self) -> None:
        self.stats: dict[int, dict[str, float]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})

    def add(self, other: PQStat) -> PQStat:
        for cat, s in other.stats.items():
            for k, v in s.items():
                self.stats[cat][k] += v
        return self

    def pq_average(self, categories: dict[int, dict], isthing: bool | None) -> tuple[dict, dict]:
        """Mean PQ/SQ/RQ over the categories (``isthing`` selects things, stuff or all).

        Categories without any gt or predicted segment are left out of the mean.

        Returns:
            ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})`` as fractions.
        """
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for cat_id, cat in categories.items():
            if isthing is not None and bool(cat.get("isthing", 0)) != isthing:
                continue
            s = self.stats.get(cat_id, {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
            tp, fp, fn, iou = s["tp"], s["fp"], s["fn"], s["iou"]
            if tp + fp + fn == 0:
                per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            pq_c = iou / denom
            sq_c = iou / tp if tp != 0 else 0.0
            rq_c = tp / denom
            per_class[cat_id] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq, sq, rq = pq + pq_c, sq + sq_c, rq + rq_c
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def _segment_areas(ids: np.ndarray) -> dict[int, int]:
    labels, counts = np.unique(ids, return_counts=True)
    return dict(zip(labels.tolist(), counts.tolist()))


def pq_compute_single_image(
    gt_ids: np.ndarray,
    gt_segments: Iterable[dict],
    pred_ids: np.ndarray,
    pred_segments: Iterable[dict],
    categories: dict[int, dict],
    image_id: Any = None,
) -> PQStat:
    """Match the segments of one image and count per-category tp/fp/fn/IoU.

    Args:
        gt_ids: ``[H, W]`` gt segment ids (0 = VOID; ids missing from ``gt_segments`` are VOID too).
        gt_segments: ``{"id", "category_id", "iscrowd"}`` per gt segment.
        pred_ids: ``[H, W]`` predicted segment ids (0 = VOID).
        pred_segments: ``{"id", "category_id"}`` per predicted segment (dataset category ids).
        categories: dataset ``{category_id: {"isthing": 0/1, ...}}``.
        image_id: named in error messages.
    """
    gt_ids = np.asarray(gt_ids, dtype=np.int64)
    pred_ids = np.asarray(pred_ids, dtype=np.int64)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"image_id {image_id}: prediction shape {pred_ids.shape} != ground truth {gt_ids.shape}.")
    gt_segms = {int(s["id"]): dict(s) for s in gt_segments}
    pred_segms = {int(s["id"]): dict(s) for s in pred_segments}
    for s in pred_segms.values():
        if s["category_id"] not in categories:
            raise ValueError(
                f"image_id {image_id}: predicted segment {s['id']} has unknown category {s['category_id']}."
            )
    gt_ids = np.where(np.isin(gt_ids, list(gt_segms)), gt_ids, VOID)

    gt_areas = _segment_areas(gt_ids)
    pred_areas = _segment_areas(pred_ids)
    for label in pred_areas:
        if label != VOID and label not in pred_segms:
            raise ValueError(
                f"image_id {image_id}: segment id {label} is in the prediction image but not in its segments_info."
            )
    for seg_id, segm in pred_segms.items():
        if seg_id not in pred_areas:
            raise ValueError(f"image_id {image_id}: segments_info lists segment {seg_id} that has no pixel.")
        segm["area"] = pred_areas[seg_id]
    for seg_id, segm in gt_segms.items():
        segm["area"] = gt_areas.get(seg_id, 0)

    pair_labels, pair_counts = np.unique(gt_ids * _OFFSET + pred_ids, return_counts=True)
    intersections = {(int(lab // _OFFSET), int(lab % _OFFSET)): int(c) for lab, c in zip(pair_labels, pair_counts)}

    stat = PQStat()
    crowd_by_category = {s["category_id"]: seg_id for seg_id, s in gt_segms.items() if s.get("iscrowd", 0) == 1}
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), inter in intersections.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt_s, pred_s = gt_segms[gt_label], pred_segms[pred_label]
        if gt_s.get("iscrowd", 0) == 1 or gt_s["category_id"] != pred_s["category_id"]:
            continue
        union = pred_s["area"] + gt_s["area"] - inter - intersections.get((VOID, pred_label), 0)
        iou = inter / union
        if iou > 0.5:
            stat.stats[gt_s["category_id"]]["tp"] += 1
            stat.stats[gt_s["category_id"]]["iou"] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    for gt_label, gt_s in gt_segms.items():
        if gt_label in gt_matched or gt_s.get("iscrowd", 0) == 1 or gt_s["area"] == 0:
            continue
        stat.stats[gt_s["category_id"]]["fn"] += 1

    for pred_label, pred_s in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = intersections.get((VOID, pred_label), 0)
        crowd = crowd_by_category.get(pred_s["category_id"])
        if crowd is not None:
            ignored += intersections.get((crowd, pred_label), 0)
        if ignored / pred_s["area"] > 0.5:
            continue
        stat.stats[pred_s["category_id"]]["fp"] += 1
    return stat


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ, SQ and RQ (all, things, stuff, per category) against a COCO panoptic json + PNG folder.

    Each output has ``"panoptic_seg": (panoptic_img [H, W] int tensor, segments_info)`` where
    ``segments_info`` lists ``{"id", "category_id" (contiguous), "isthing"}``; with ``segments_info``
    None, ``panoptic_img`` holds ``category * label_divisor + instance`` and -1 for VOID.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, *, distributed: bool = True):
        """
        Args:
            dataset_name: registered dataset; metadata gives ``panoptic_json``, ``panoptic_root``,
                ``thing_dataset_id_to_contiguous_id``, ``stuff_dataset_id_to_contiguous_id`` and
                ``label_divisor`` (looked up on first use).
            output_dir: when given, predictions are written there in COCO panoptic format
                (``predictions.json`` and ``predictions/<image>.png``).
            distributed: gather statistics from all ranks; only the main process returns results.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._gt_cache: tuple[dict, dict] | None = None
        self._stat = PQStat()
        self._pred_annotations: list[dict] = []

    @property
    def _metadata(self) -> Any:
        return MetadataCatalog.get(self._dataset_name)

    def _gt(self) -> tuple[dict, dict]:
        """``({image_id: annotation}, {category_id: category})`` from the panoptic json."""
        if self._gt_cache is None:
            meta = self._metadata
            for key in ("panoptic_json", "panoptic_root"):
                if meta.get(key) is None:
                    raise ValueError(f"COCOPanopticEvaluator: dataset {self._dataset_name!r} has no {key!r} metadata.")
            with PathManager.open(meta.panoptic_json) as f:
                gt_json = json.load(f)
            annotations = {a["image_id"]: a for a in gt_json["annotations"]}
            categories = {c["id"]: c for c in gt_json["categories"]}
            self._gt_cache = (annotations, categories)
        return self._gt_cache

    def reset(self) -> None:
        self._stat = PQStat()
        self._pred_annotations = []

    def _convert_category_id(self, segment_info: dict, image_id: Any) -> dict:
        meta = self._metadata
        isthing = segment_info.get("isthing", True)
        key = "thing_dataset_id_to_contiguous_id" if isthing else "stuff_dataset_id_to_contiguous_id"
        id_map = meta.get(key)
        if id_map is None:
            raise ValueError(f"COCOPanopticEvaluator: dataset {self._dataset_name!r} has no {key!r} metadata.")
        reverse = {v: k for k, v in id_map.items()}
        if segment_info["category_id"] not in reverse:
            raise ValueError(
                f"image_id {image_id}: predicted {'thing' if isthing else 'stuff'} category "
                f"{segment_info['category_id']} is not in {key}."
            )
        return {**segment_info, "category_id": reverse[segment_info["category_id"]]}

    def _segments_from_labels(self, panoptic_img: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """Handle ``segments_info=None``: labels are ``category * label_divisor + instance``, -1 = VOID."""
        meta = self._metadata
        label_divisor = meta.get("label_divisor")
        if label_divisor is None:
            raise ValueError(
                f"COCOPanopticEvaluator: segments_info is None, which needs 'label_divisor' metadata for dataset "
                f"{self._dataset_name!r}."
            )
        thing_ids = set((meta.get("thing_dataset_id_to_contiguous_id") or {}).values())
        ids = np.zeros_like(panoptic_img)
        segments = []
        for new_id, label in enumerate(v for v in np.unique(panoptic_img) if v != -1):
            category = int(label) // label_divisor
            ids[panoptic_img == label] = new_id + 1
            segments.append({"id": new_id + 1, "category_id": category, "isthing": category in thing_ids})
        return ids, segments

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Score each image's panoptic prediction against its gt PNG."""
        from PIL import Image

        annotations, categories = self._gt()
        panoptic_root = self._metadata.panoptic_root
        for input, output in zip(inputs, outputs):
            image_id = input["image_id"]
            if image_id not in annotations:
                raise ValueError(f"COCOPanopticEvaluator: image_id {image_id!r} is not in the panoptic json.")
            panoptic_img, segments_info = output["panoptic_seg"]
            panoptic_img = panoptic_img.to("cpu", torch.int64).numpy()
            if segments_info is None:
                pred_ids, segments_info = self._segments_from_labels(panoptic_img)
            else:
                pred_ids = panoptic_img
            pred_segments = [self._convert_category_id(s, image_id) for s in segments_info]
            ann = annotations[image_id]
            with PathManager.open(os.path.join(panoptic_root, ann["file_name"]), "rb") as f:
                gt_ids = rgb2id(np.asarray(Image.open(f).convert("RGB")))
            stat = pq_compute_single_image(gt_ids, ann["segments_info"], pred_ids, pred_segments, categories, image_id)
            self._stat.add(stat)
            if self._output_dir:
                self._write_prediction(input, ann, pred_ids, pred_segments)

    def _write_prediction(self, input: dict, ann: dict, pred_ids: np.ndarray, segments: list[dict]) -> None:
        from PIL import Image

        png_name = os.path.splitext(os.path.basename(ann["file_name"]))[0] + ".png"
        folder = os.path.join(self._output_dir, "predictions")
        PathManager.mkdirs(folder)
        with atomic_write(os.path.join(folder, png_name), "wb") as f:
            Image.fromarray(id2rgb(pred_ids)).save(f, format="PNG")
        self._pred_annotations.append(
            {
                "image_id": input["image_id"],
                "file_name": png_name,
                "segments_info": [
                    {"id": int(s["id"]), "category_id": int(s["category_id"]), "isthing": bool(s.get("isthing", True))}
                    for s in segments
                ],
            }
        )

    def evaluate(self) -> dict | None:
        """Returns ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", ..., "PQ_st", ..., "PQ-<name>"}}`` (percent)."""
        stat, pred_annotations = self._stat, self._pred_annotations
        if self._distributed:
            comm.synchronize()
            stats = comm.gather(dict(stat.stats), dst=0)
            all_annotations = comm.gather(pred_annotations, dst=0)
            if not comm.is_main_process():
                return {}
            stat = PQStat()
            for s in stats:
                other = PQStat()
                other.stats.update(s)
                stat.add(other)
            pred_annotations = list(itertools.chain(*all_annotations))
        _, categories = self._gt()
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, "predictions.json"), "w") as f:
                json.dump({"annotations": pred_annotations, "categories": list(categories.values())}, f)

        res: dict[str, float] = OrderedDict()
        per_class = {}
        rows = []
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            avg, per_class_part = stat.pq_average(categories, isthing)
            suffix = {"All": "", "Things": "_th", "Stuff": "_st"}[name]
            for k in ("PQ", "SQ", "RQ"):
                res[k + suffix] = 100 * avg[k.lower()]
            rows.append([name, 100 * avg["pq"], 100 * avg["sq"], 100 * avg["rq"], avg["n"]])
            if isthing is None:
                per_class = per_class_part
        for cat_id, values in per_class.items():
            name = categories[cat_id].get("name", str(cat_id))
            for k in ("PQ", "SQ", "RQ"):
                res[f"{k}-{name}"] = 100 * values[k.lower()]
        table = tabulate(rows, headers=["", "PQ", "SQ", "RQ", "#categories"], tablefmt="pipe", floatfmt=".3f")
        logger.info("Panoptic Evaluation Results:\n" + table)
        return OrderedDict({"panoptic_seg": res})
