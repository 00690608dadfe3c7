"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC) from an accumulated confusion matrix."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from libdet.data.catalog import MetadataCatalog
from libdet.utils import comm
from libdet.utils.file_io import PathManager, atomic_write

from .evaluator import DatasetEvaluator

__all__ = ["SemSegEvaluator", "sem_seg_metrics_from_confusion"]

logger = logging.getLogger(__name__)


def sem_seg_metrics_from_confusion(conf_matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Segmentation metrics (percent) from a confusion matrix.

    Args:
        conf_matrix: ``[C + 1, C + 1]`` counts indexed ``[pred, gt]``; the last gt column counts
            ignored pixels and is not used, the last pred row (never predicted) is not used either.
        class_names: ``C`` names for the per-class entries.

    Returns:
        ``mIoU``, ``fwIoU``, ``IoU-<name>``, ``mACC``, ``pACC``, ``ACC-<name>``. Classes absent from the
        ground truth get NaN per-class values and are excluded from the means.
    """
    num_classes = len(class_names)
    if conf_matrix.shape != (num_classes + 1, num_classes + 1):
        raise ValueError(
            f"Confusion matrix has shape {conf_matrix.shape}, expected {(num_classes + 1, num_classes + 1)} for "
            f"{num_classes} classes."
        )
    counts = conf_matrix[:-1, :-1].astype(np.float64)
    tp = np.diagonal(counts)
    gt_pixels = counts.sum(axis=0)
    pred_pixels = counts.sum(axis=1)
    union = gt_pixels + pred_pixels - tp
    present = gt_pixels > 0
    acc = np.full(num_classes, np.nan)
    iou = np.full(num_classes, np.nan)
    acc[present] = tp[present] / gt_pixels[present]
    iou_valid = present & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    total_gt = gt_pixels.sum()
    weights = gt_pixels / total_gt if total_gt > 0 else np.zeros(num_classes)

    res: dict[str, float] = OrderedDict()
    res["mIoU"] = 100 * float(iou[iou_valid].mean()) if iou_valid.any() else float("nan")
    res["fwIoU"] = 100 * float((iou[iou_valid] * weights[iou_valid]).sum()) if iou_valid.any() else float("nan")
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
    res["mACC"] = 100 * float(acc[present].mean()) if present.any() else float("nan")
    res["pACC"] = 100 * float(tp.sum() / total_gt) if total_gt > 0 else float("nan")
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    return res


class SemSegEvaluator(DatasetEvaluator):
    """Confusion-matrix metrics of semantic segmentation predictions.

    Each output dict has ``"sem_seg"``: ``[C, H, W]`` scores (or ``[H, W]`` labels) at the original
    image resolution; the ground truth is read from the input's ``"sem_seg_file_name"`` (an image of
    class ids, ``ignore_label`` for unlabeled pixels).
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        num_classes: int | None = None,
        ignore_label: int | None = None,
    ):
        """
        Args:
            dataset_name: registered dataset; metadata gives ``stuff_classes`` and ``ignore_label``
                (looked up on first use).
            distributed: sum the confusion matrices of all ranks; only the main process returns results.
            output_dir: when given, ``sem_seg_predictions.json`` (per-image, per-class RLEs in COCO
                format, category ids from ``stuff_dataset_id_to_contiguous_id`` when present) and
                ``sem_seg_evaluation.pth`` are written there.
            num_classes: overrides ``len(stuff_classes)``.
            ignore_label: overrides the metadata's ``ignore_label`` (default 255).
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._num_classes_arg = num_classes
        self._ignore_label_arg = ignore_label
        self._conf_matrix: np.ndarray | None = None
        self._predictions: list[dict] = []

    @property
    def _metadata(self) -> Any:
        return MetadataCatalog.get(self._dataset_name)

    @property
    def _class_names(self) -> list[str]:
        names = self._metadata.get("stuff_classes")
        if names is None:
            if self._num_classes_arg is None:
                raise ValueError(
                    f"SemSegEvaluator: dataset {self._dataset_name!r} has no 'stuff_classes' metadata; set it or "
                    f"pass num_classes=."
                )
            return [str(i) for i in range(self._num_classes_arg)]
        if self._num_classes_arg is not None and self._num_classes_arg != len(names):
            raise ValueError(
                f"SemSegEvaluator: num_classes={self._num_classes_arg} but dataset {self._dataset_name!r} has "
                f"{len(names)} stuff_classes."
            )
        return list(names)

    @property
    def _num_classes(self) -> int:
        return len(self._class_names)

    @property
    def _ignore_label(self) -> int:
        if self._ignore_label_arg is not None:
            return self._ignore_label_arg
        return int(self._metadata.get("ignore_label", 255))

    def reset(self) -> None:
        self._conf_matrix = None
        self._predictions = []

    def _load_gt(self, input: dict) -> np.ndarray:
        if "sem_seg_file_name" not in input:
            raise ValueError(
                f"SemSegEvaluator: input {input.get('file_name', input.get('image_id'))!r} has no 'sem_seg_file_name'."
            )
        from PIL import Image

        with PathManager.open(input["sem_seg_file_name"], "rb") as f:
            return np.asarray(Image.open(f), dtype=np.int64)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Add each image's (prediction, gt) pixel pairs to the confusion matrix."""
        num_classes = self._num_classes
        ignore = self._ignore_label
        if self._conf_matrix is None:
            self._conf_matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
        for input, output in zip(inputs, outputs):
            sem_seg = output["sem_seg"]
            pred = sem_seg.argmax(dim=0) if sem_seg.dim() == 3 else sem_seg
            pred = pred.to("cpu", torch.int64).numpy()
            gt = self._load_gt(input)
            name = input.get("sem_seg_file_name")
            if gt.shape != pred.shape:
                raise ValueError(
                    f"SemSegEvaluator: prediction shape {pred.shape} != ground truth {gt.shape} of {name!r}."
                )
            if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
                raise ValueError(
                    f"SemSegEvaluator: predicted class ids for {name!r} must be in [0, {num_classes}), got range "
                    f"[{pred.min()}, {pred.max()}]."
                )
            gt = gt.copy()
            unknown = (gt != ignore) & ((gt < 0) | (gt >= num_classes))
            if unknown.any():
                raise ValueError(
                    f"SemSegEvaluator: ground truth {name!r} has labels {sorted(set(gt[unknown].tolist()))[:10]} "
                    f"outside [0, {num_classes}) that are not ignore_label={ignore}."
                )
            gt[gt == ignore] = num_classes
            self._conf_matrix += np.bincount(
                (num_classes + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(num_classes + 1) ** 2
            ).reshape(num_classes + 1, num_classes + 1)
            if self._output_dir:
                self._predictions.extend(self._encode_json_sem_seg(pred, input))

    def _encode_json_sem_seg(self, pred: np.ndarray, input: dict) -> list[dict]:
        import pycocotools.mask as mask_util

        id_map = self._metadata.get("stuff_dataset_id_to_contiguous_id")
        reverse = {v: k for k, v in id_map.items()} if id_map else None
        results = []
        for label in np.unique(pred):
            category_id = reverse[int(label)] if reverse else int(label)
            rle = mask_util.encode(np.asfortranarray((pred == label)[:, :, None].astype(np.uint8)))[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            results.append({"file_name": input.get("file_name"), "category_id": category_id, "segmentation": rle})
        return results

    def evaluate(self) -> dict | None:
        """Returns ``{"sem_seg": {"mIoU", "fwIoU", "IoU-<c>", "mACC", "pACC", "ACC-<c>"}}`` (percent)."""
        num_classes = self._num_classes
        conf = self._conf_matrix
        if conf is None:
            conf = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            matrices = comm.gather(conf, dst=0)
            all_predictions = comm.gather(predictions, dst=0)
            if not comm.is_main_process():
                return {}
            conf = np.sum(matrices, axis=0)
            predictions = list(itertools.chain(*all_predictions))
        if conf[:-1, :-1].sum() == 0:
            logger.warning(f"SemSegEvaluator({self._dataset_name!r}): no labeled pixel was evaluated.")

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with atomic_write(os.path.join(self._output_dir, "sem_seg_predictions.json"), "w") as f:
                json.dump(predictions, f)

        res = sem_seg_metrics_from_confusion(conf, self._class_names)
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, "sem_seg_evaluation.pth"), "wb") as f:
                torch.save(dict(res), f)
        results = OrderedDict({"sem_seg": res})
        logger.info(results)
        return results
