"""Dataset mapper turning COCO panoptic annotations into DETR targets: one (box, class, mask) per segment."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import libdet.data.transforms as T
from libdet.data import detection_utils as utils
from libdet.structures import BitMasks, Instances

__all__ = ["PanopticDETRDatasetMapper"]


def _rgb_to_id(color: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG (H, W, 3) uint8 -> (H, W) segment ids (R + 256 G + 256^2 B)."""
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


class PanopticDETRDatasetMapper:
    """Map a dict of libdet's COCO panoptic datasets (``file_name``, ``pan_seg_file_name``, ``segments_info`` with
    contiguous ``category_id``) to a model input.

    The image and the segment-id map go through the same augmentations (the map with nearest-neighbour
    resampling). In training, each non-crowd segment still visible becomes an instance: ``gt_masks`` (BitMasks),
    ``gt_boxes`` (the mask's bounding box) and ``gt_classes``; things and stuff alike, as DETR predicts both.

    Args:
        is_train: build "instances" (training) or only the image (inference; the evaluator reads the PNGs).
        augmentations: augmentations applied to image and segment map.
        image_format: format of "image" (``read_image``'s ``format``).
    """

    def __init__(self, *, is_train: bool, augmentations: Sequence[T.Augmentation | T.Transform], image_format: str):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        d = copy.deepcopy(dataset_dict)
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        pan = None
        if self.is_train:
            if "pan_seg_file_name" not in d:
                raise ValueError(f"PanopticDETRDatasetMapper: {d['file_name']!r} has no 'pan_seg_file_name'.")
            # float64 holds every id exactly and is resized like an image (nearest for segmentations)
            pan = _rgb_to_id(utils.read_image(d.pop("pan_seg_file_name"), "RGB")).astype(np.float64)
        aug_input = T.AugInput(image, sem_seg=pan)
        self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            d.pop("segments_info", None)
            d.pop("pan_seg_file_name", None)
            return d
        pan = aug_input.sem_seg
        masks, classes = [], []
        for segment in d.pop("segments_info"):
            if segment.get("iscrowd", 0):
                continue
            mask = pan == segment["id"]
            if mask.any():
                masks.append(torch.from_numpy(mask))
                classes.append(int(segment["category_id"]))
        h, w = image.shape[:2]
        instances = Instances((h, w))
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = BitMasks(torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.bool))
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        d["instances"] = instances
        return d
