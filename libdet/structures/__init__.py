"""The vocabulary of libdet: boxes, masks, keypoints, instances and image batches.

Names and behaviour follow ``detectron2.structures``. This package imports no other part of libdet at
import time (``pairwise_iou_rotated`` and ``ROIMasks.to_bitmasks`` import their ops from ``libdet.layers``
when called).
"""

from . import boxes, image_list, instances, keypoints, masks, rotated_boxes
from .boxes import Boxes, BoxMode, pairwise_ioa, pairwise_iou, pairwise_point_box_distance
from .image_list import ImageList
from .instances import Instances
from .keypoints import Keypoints, heatmaps_to_keypoints
from .masks import BitMasks, PolygonMasks, ROIMasks, polygons_to_bitmask
from .rotated_boxes import RotatedBoxes, pairwise_iou_rotated

__all__ = [
    "BitMasks",
    "BoxMode",
    "Boxes",
    "ImageList",
    "Instances",
    "Keypoints",
    "PolygonMasks",
    "ROIMasks",
    "RotatedBoxes",
    "boxes",
    "heatmaps_to_keypoints",
    "image_list",
    "instances",
    "keypoints",
    "masks",
    "pairwise_ioa",
    "pairwise_iou",
    "pairwise_iou_rotated",
    "pairwise_point_box_distance",
    "polygons_to_bitmask",
    "rotated_boxes",
]
