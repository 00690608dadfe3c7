"""Dataset mapper for DensePose: libdet's :class:`DatasetMapper` plus ``gt_densepose`` on the instances."""

from __future__ import annotations

from typing import Any

from libdet.data import DatasetMapper
from libdet.data import detection_utils as utils
from libdet.data import transforms as T

from ..structures import DensePoseDataRelative, DensePoseList, DensePoseTransformData

__all__ = ["DensePoseDatasetMapper"]


class DensePoseDatasetMapper(DatasetMapper):
    """In training, each instance also gets its DensePose annotation (:class:`DensePoseDataRelative`, or None for
    a person without one) in the ``gt_densepose`` field (a :class:`DensePoseList`), transformed with the image: box
    relative, so only horizontal flips change it (this needs the UV symmetry tables, ``uv_symmetries_path``)."""

    def __init__(self, *, uv_symmetries_path: str | None = None, **kwargs):
        """
        Args:
            uv_symmetries_path: the UV symmetry tables (detectron2's ``UV_symmetry_transforms.mat``, or an .npz;
                see :meth:`DensePoseTransformData.load`); read on first use, needed only when images are flipped.
            kwargs: arguments of :class:`DatasetMapper`.
        """
        super().__init__(**kwargs)
        self.uv_symmetries_path = uv_symmetries_path
        self._transform_data: DensePoseTransformData | None = None

    def _densepose_transform_data(self) -> DensePoseTransformData:
        if self._transform_data is None:
            if self.uv_symmetries_path is None:
                raise ValueError(
                    "DensePoseDatasetMapper: a horizontal flip of DensePose annotations needs the UV symmetry tables; "
                    "set `uv_symmetries_path` (detectron2's UV_symmetry_transforms.mat) or remove RandomFlip."
                )
            self._transform_data = DensePoseTransformData.load(self.uv_symmetries_path)
        return self._transform_data

    def _transform_annotations(
        self, dataset_dict: dict[str, Any], transforms: T.TransformList, image_shape: tuple
    ) -> None:
        annos = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        flips = sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms) % 2 == 1
        densepose = []
        for k, anno in enumerate(annos):
            dp = None
            if DensePoseDataRelative.validate_annotation(anno):
                where = f"DensePose annotation {anno.get('id', k)} of '{dataset_dict.get('file_name')}'"
                dp = DensePoseDataRelative(anno, where=where)
                if flips:
                    dp.hflip(self._densepose_transform_data())
            densepose.append(dp)
        annos = [
            utils.transform_instance_annotations(
                a, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for a in annos
        ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        instances.gt_densepose = DensePoseList(densepose)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
