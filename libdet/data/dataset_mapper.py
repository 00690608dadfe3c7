"""The default mapper: one dataset dict (file names + annotations) -> the model's input dict."""

from __future__ import annotations

import copy
import enum
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from libdet.structures import BoxMode

from . import detection_utils as utils
from . import transforms as T
from .transforms.augmentation import _input_names
from .validation import AnnotationValidator

__all__ = ["DatasetMapper"]

logger = logging.getLogger(__name__)

_ATOMIC = frozenset((str, int, float, bool, type(None)))


def _deepcopy_plain(obj: Any) -> Any:
    """``copy.deepcopy`` for the JSON-like data of dataset dicts: dicts and lists are rebuilt, numbers, strings
    and enums shared; anything else goes through ``copy.deepcopy``. Equal values, 3-5x faster on polygon lists
    (objects shared inside ``obj`` become separate copies)."""
    cls = type(obj)
    if cls is dict:
        return {k: v if type(v) in _ATOMIC else _deepcopy_plain(v) for k, v in obj.items()}
    if cls is list:
        return [v if type(v) in _ATOMIC else _deepcopy_plain(v) for v in obj]
    if cls in _ATOMIC or isinstance(obj, enum.Enum):
        return obj
    return copy.deepcopy(obj)


def _may_use_boxes(aug: T.Augmentation) -> bool:
    """Whether ``aug`` may read ``AugInput.boxes``: it takes them in ``get_transform``, or it has its own
    ``__call__`` (which may read anything)."""
    if isinstance(aug, T.AugmentationList):
        return any(_may_use_boxes(a) for a in aug.augs)
    if type(aug).__call__ is not T.Augmentation.__call__:
        return True
    return "boxes" in _input_names(aug)


class DatasetMapper:
    """Read the image of a dataset dict, augment it, and convert annotations to :class:`Instances`.

    The output dict keeps the input's keys and adds:

    - ``"image"``: ``(C, H, W)`` uint8 tensor in ``image_format`` channel order.
    - ``"instances"`` (training, when the dict has ``annotations``): ``gt_boxes``, ``gt_classes`` and, when
      enabled, ``gt_masks`` / ``gt_keypoints``; empty instances are removed and crowd annotations dropped.
    - ``"sem_seg"``: ``(H, W)`` int64 tensor, when the dict has ``sem_seg_file_name``.
    - ``"proposals"``: when ``precomputed_proposal_topk`` is set and the dict has ``proposal_boxes``.

    At test time annotations are removed (the model must not see them). In training the non-crowd annotations
    are checked by :attr:`validator` (:class:`~libdet.data.validation.AnnotationValidator`): a malformed one
    raises :class:`~libdet.data.errors.AnnotationError` naming the image file and the annotation, so that
    :class:`~libdet.data.MapDataset` skips the image and counts it as failed.

    Args:
        is_train: training or inference mode.
        augmentations: augmentations/transforms applied in order (to image, boxes and sem_seg).
        image_format: see :func:`detection_utils.read_image` (``"BGR"``, ``"RGB"``, ...).
        use_instance_mask: keep ``segmentation`` and produce ``gt_masks``.
        use_keypoint: keep ``keypoints`` and produce ``gt_keypoints``.
        instance_mask_format: ``"polygon"`` or ``"bitmask"``.
        keypoint_hflip_indices: ``(K,)`` flip permutation, required with keypoints and horizontal flips.
        precomputed_proposal_topk: number of precomputed proposals to keep, or None to ignore them.
        recompute_boxes: replace ``gt_boxes`` with the tight boxes of the (cropped) masks.
    """

    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[T.Augmentation | T.Transform],
        image_format: str,
        use_instance_mask: bool = False,
        use_keypoint: bool = False,
        instance_mask_format: str = "polygon",
        keypoint_hflip_indices: np.ndarray | None = None,
        precomputed_proposal_topk: int | None = None,
        recompute_boxes: bool = False,
    ):
        if recompute_boxes and not use_instance_mask:
            raise ValueError("DatasetMapper: recompute_boxes=True needs use_instance_mask=True.")
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(
                f"DatasetMapper: instance_mask_format must be 'polygon' or 'bitmask', got {instance_mask_format!r}."
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.proposal_topk = precomputed_proposal_topk
        self.recompute_boxes = recompute_boxes
        num_keypoints = len(keypoint_hflip_indices) if use_keypoint and keypoint_hflip_indices is not None else None
        self.validator = AnnotationValidator(num_keypoints=num_keypoints)
        mode = "training" if is_train else "inference"
        logger.info(f"[DatasetMapper] Augmentations used in {mode}: {self.augmentations}")

    def _checked_annotations(self, dataset_dict: dict[str, Any], image_size: tuple[int, int]) -> list[dict[str, Any]]:
        """The image's non-crowd annotations, without the fields this mapper does not use, checked by
        :attr:`validator` (malformed ones raise :class:`AnnotationError`; some are dropped, see
        :mod:`libdet.data.validation`)."""
        kept = []
        for i, anno in enumerate(dataset_dict["annotations"]):
            if anno.get("iscrowd", 0) != 0:
                continue
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
            if self.validator.check(anno, file_name=dataset_dict["file_name"], image_size=image_size, index=i):
                kept.append(anno)
        return kept

    def _transform_annotations(
        self, dataset_dict: dict[str, Any], transforms: T.TransformList, image_shape: tuple
    ) -> None:
        annos = [obj for obj in dataset_dict.pop("annotations") if obj.get("iscrowd", 0) == 0]
        if not utils._transform_plain_annotations(annos, transforms, image_shape):
            annos = [
                utils.transform_instance_annotations(
                    obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
                )
                for obj in annos
            ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        """Map one dataset dict (not modified) to a new dict with ``image``, ``instances``, ... (see class doc)."""
        dataset_dict = _deepcopy_plain(dataset_dict)
        if "file_name" not in dataset_dict:
            raise ValueError(
                f"DatasetMapper: dataset dict (image_id={dataset_dict.get('image_id', '?')}) has no 'file_name'."
            )
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)

        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
            if sem_seg_gt.shape != image.shape[:2]:
                raise utils.SizeMismatchError(
                    f"Semantic segmentation of image '{dataset_dict['file_name']}' has shape {sem_seg_gt.shape}, "
                    f"the image has {image.shape[:2]}."
                )

        if self.is_train and "annotations" in dataset_dict:
            dataset_dict["annotations"] = self._checked_annotations(dataset_dict, image.shape[:2])
        boxes = None
        annos = dataset_dict.get("annotations")
        if annos and _may_use_boxes(self.augmentations):  # only box-aware augmentations (crops) read them
            plain = [a for a in annos if a.get("iscrowd", 0) == 0 and a["bbox_mode"] != BoxMode.XYWHA_ABS]
            if plain:
                boxes = np.array([utils.get_bbox(a) for a in plain], dtype=np.float64).reshape(-1, 4)
        aug_input = T.AugInput(image, boxes=boxes, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg

        image_shape = image.shape[:2]  # h, w
        if image.ndim == 2:
            image = image[:, :, None]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))

        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict

        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def __repr__(self) -> str:
        return (
            f"DatasetMapper(is_train={self.is_train}, augmentations={self.augmentations}, "
            f"image_format={self.image_format!r}, use_instance_mask={self.use_instance_mask}, "
            f"use_keypoint={self.use_keypoint}, instance_mask_format={self.instance_mask_format!r}, "
            f"recompute_boxes={self.recompute_boxes})"
        )
