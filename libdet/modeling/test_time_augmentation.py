"""Test-time augmentation of R-CNN models: run the model on several resized (and flipped) versions of each
image, map the boxes back to the original image, merge them with per-class NMS, then run the mask and
keypoint branches on the merged boxes under every augmentation and average their outputs."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from libdet.data import transforms as T
from libdet.data.detection_utils import create_keypoint_hflip_indices, read_image
from libdet.structures import Boxes, Instances, RotatedBoxes

from .meta_arch.rcnn import GeneralizedRCNN
from .postprocessing import detector_postprocess
from .roi_heads.fast_rcnn import fast_rcnn_inference_single_image

__all__ = ["DatasetMapperTTA", "GeneralizedRCNNWithTTA"]

# Detections with a merged score at or below this are dropped (every score that reached the merge passed the
# model's own score threshold already).
_MERGE_SCORE_THRESH = 1e-8


class DatasetMapperTTA:
    """Turn one model input into its test-time augmented versions: for every ``min_size``, the image resized
    so that its shorter side is ``min_size`` (longer side at most ``max_size``), and with ``flip`` also its
    horizontal mirror.

    Args:
        min_sizes: target lengths of the shorter side, e.g. ``[400, 500, 600, 700, 800]``.
        max_size: upper bound of the longer side.
        flip: add a horizontally flipped version of every resized image.
    """

    def __init__(self, *, min_sizes: Sequence[int], max_size: int, flip: bool = True):
        if isinstance(min_sizes, int):
            min_sizes = [min_sizes]
        min_sizes = list(min_sizes)
        if not min_sizes or not all(isinstance(s, (int, np.integer)) and s > 0 for s in min_sizes):
            raise ValueError(
                f"DatasetMapperTTA: `min_sizes` must be a non-empty list of positive ints, got {min_sizes}."
            )
        if not isinstance(max_size, (int, np.integer)) or max_size <= 0:
            raise ValueError(f"DatasetMapperTTA: `max_size` must be a positive int, got {max_size!r}.")
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = int(max_size)
        self.flip = bool(flip)

    def __call__(self, dataset_dict: dict[str, Any]) -> list[dict[str, Any]]:
        """
        Args:
            dataset_dict: a model input with ``"image"`` (``(C, H, W)`` tensor) and optionally ``"height"`` /
                ``"width"``, the size of the original image (``"image"`` may be a resized version of it).

        Returns:
            one dict per augmentation: a copy of ``dataset_dict`` with the augmented ``"image"`` (same dtype)
            and ``"transforms"``, the :class:`TransformList` from the original image to that image.
        """
        if "image" not in dataset_dict:
            raise ValueError("DatasetMapperTTA: the input has no 'image' key.")
        image = dataset_dict["image"]
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise ValueError(
                f"DatasetMapperTTA: 'image' must be a (C, H, W) tensor, got "
                f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}."
            )
        numpy_image = image.permute(1, 2, 0).cpu().numpy()
        if np.issubdtype(numpy_image.dtype, np.integer) and numpy_image.dtype != np.uint8:
            numpy_image = numpy_image.astype(np.float32)
        height, width = numpy_image.shape[:2]
        orig_shape = (int(dataset_dict.get("height", height)), int(dataset_dict.get("width", width)))
        if orig_shape != (height, width):
            # The input is a resized version of the original image: start from the original's coordinates.
            pre_tfm: T.Transform = T.ResizeTransform(orig_shape[0], orig_shape[1], height, width)
        else:
            pre_tfm = T.NoOpTransform()

        aug_candidates: list[list[T.Augmentation]] = []
        for min_size in self.min_sizes:
            resize = T.ResizeShortestEdge(min_size, self.max_size)
            aug_candidates.append([resize])
            if self.flip:
                aug_candidates.append([resize, T.RandomFlip(prob=1.0)])

        ret = []
        for augs in aug_candidates:
            new_image, tfms = T.apply_augmentations(augs, np.copy(numpy_image))
            torch_image = torch.from_numpy(np.ascontiguousarray(new_image.transpose(2, 0, 1))).to(image.dtype)
            dic = copy.copy(dataset_dict)
            dic["transforms"] = T.TransformList([pre_tfm, *tfms.transforms])
            dic["image"] = torch_image
            ret.append(dic)
        return ret


def _is_flipped(tfm: T.TransformList) -> bool:
    return sum(isinstance(t, T.HFlipTransform) for t in tfm.transforms) % 2 == 1


class GeneralizedRCNNWithTTA(nn.Module):
    """A :class:`GeneralizedRCNN` with test-time augmentation; call it like the model at inference.

    Per image: detect boxes on every augmented version (mask / keypoint branches off), map them back to the
    original image, merge them with :func:`fast_rcnn_inference_single_image` (per-class NMS with the box
    predictor's ``test_nms_thresh`` and ``test_topk_per_image``), then run the mask and keypoint branches on
    the merged boxes under every augmentation and average the results (flipped ones un-flipped; keypoints
    also swap left and right).

    Args:
        model: a :class:`GeneralizedRCNN` (or a ``DistributedDataParallel`` of one) with a proposal generator
            and axis-aligned boxes.
        tta_mapper: makes the augmented inputs, e.g. ``DatasetMapperTTA(min_sizes=[...], max_size=1333)``.
        batch_size: augmented images run through the model at once.
        keypoint_flip_indices: ``(K,)`` index of the mirror of each keypoint (e.g. left_eye <-> right_eye);
            needed with flips when the model has a keypoint branch.
        metadata: instead of ``keypoint_flip_indices``, a dataset metadata (or dataset name) with
            ``keypoint_names`` and ``keypoint_flip_map``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tta_mapper: DatasetMapperTTA,
        batch_size: int = 3,
        keypoint_flip_indices: Sequence[int] | None = None,
        metadata: Any | None = None,
    ):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, GeneralizedRCNN):
            raise TypeError(f"GeneralizedRCNNWithTTA: `model` must be a GeneralizedRCNN, got {type(model).__name__}.")
        if model.proposal_generator is None:
            raise ValueError("GeneralizedRCNNWithTTA: models reading precomputed proposals are not supported.")
        if not callable(tta_mapper):
            raise TypeError(f"GeneralizedRCNNWithTTA: `tta_mapper` must be callable, got {type(tta_mapper).__name__}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"GeneralizedRCNNWithTTA: `batch_size` must be a positive int, got {batch_size!r}.")
        self.model = model
        self.tta_mapper = tta_mapper
        self.batch_size = batch_size
        predictor = getattr(model.roi_heads, "box_predictor", None)
        if isinstance(predictor, (nn.ModuleList, list, tuple)):  # cascade: the last stage's thresholds
            predictor = predictor[-1]
        missing = [a for a in ("test_nms_thresh", "test_topk_per_image") if not hasattr(predictor, a)]
        if missing or not hasattr(model.roi_heads, "num_classes"):
            raise ValueError(
                "GeneralizedRCNNWithTTA: `model.roi_heads` needs `num_classes` and a `box_predictor` with "
                f"`test_nms_thresh` and `test_topk_per_image`; got {type(model.roi_heads).__name__} with "
                f"box_predictor {type(predictor).__name__}."
            )
        self._box_predictor = [predictor]  # a list: not registered as a second submodule
        if keypoint_flip_indices is None and metadata is not None:
            keypoint_flip_indices = create_keypoint_hflip_indices(metadata)
        self.keypoint_flip_indices = (
            None
            if keypoint_flip_indices is None
            else torch.as_tensor(np.asarray(keypoint_flip_indices), dtype=torch.long)
        )
        if (
            self.keypoint_flip_indices is None
            and getattr(model.roi_heads, "keypoint_on", False)
            and getattr(tta_mapper, "flip", False)
        ):
            raise ValueError(
                "GeneralizedRCNNWithTTA: the model predicts keypoints and `tta_mapper` flips images; give "
                "`keypoint_flip_indices` or `metadata` (with keypoint_names and keypoint_flip_map) to swap left "
                "and right keypoints of flipped images."
            )

    @contextlib.contextmanager
    def _turn_off_roi_heads(self, attrs: Sequence[str]) -> Iterator[None]:
        """Temporarily set the given boolean attributes of ``model.roi_heads`` (those it has) to False."""
        roi_heads = self.model.roi_heads
        old = {a: getattr(roi_heads, a) for a in attrs if hasattr(roi_heads, a)}
        for a in old:
            setattr(roi_heads, a, False)
        try:
            yield
        finally:
            for a, v in old.items():
                setattr(roi_heads, a, v)

    def _batch_inference(
        self, batched_inputs: list[dict[str, Any]], detected_instances: list[Instances] | None = None
    ) -> list[Instances]:
        """Raw :class:`Instances` (network input resolution) of each input, ``batch_size`` inputs at a time."""
        outputs: list[Instances] = []
        for start in range(0, len(batched_inputs), self.batch_size):
            inputs = batched_inputs[start : start + self.batch_size]
            given = None if detected_instances is None else detected_instances[start : start + self.batch_size]
            outputs.extend(self.model.inference(inputs, given, do_postprocess=False))
        return outputs

    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, Instances]]:
        """
        Args:
            batched_inputs: model inputs (``"image"`` ``(C, H, W)`` in the model's ``input_format``, or
                ``"file_name"``; optionally ``"height"`` / ``"width"``, the output resolution).

        Returns:
            per image, ``{"instances": Instances}`` at the original resolution, like the model's inference.
        """
        if self.model.training:
            raise RuntimeError("GeneralizedRCNNWithTTA is for inference; call model.eval() first.")
        return [self._inference_one_image(self._maybe_read_image(i, x)) for i, x in enumerate(batched_inputs)]

    def _maybe_read_image(self, index: int, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        ret = copy.copy(dataset_dict)
        if "image" not in ret:
            if "file_name" not in ret:
                raise ValueError(
                    f"GeneralizedRCNNWithTTA: batched_inputs[{index}] has neither 'image' nor 'file_name'."
                )
            image = read_image(ret.pop("file_name"), self.model.input_format)
            ret["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "height" not in ret and "width" not in ret:
            ret["height"], ret["width"] = ret["image"].shape[1:3]
        return ret

    def _inference_one_image(self, inputs: dict[str, Any]) -> dict[str, Instances]:
        orig_shape = (int(inputs["height"]), int(inputs["width"]))
        augmented_inputs = self.tta_mapper(inputs)
        tfms = [x.pop("transforms") for x in augmented_inputs]
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]):
            all_boxes, all_scores, all_classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(all_boxes, all_scores, all_classes, orig_shape)

        mask_on = getattr(self.model.roi_heads, "mask_on", False)
        keypoint_on = getattr(self.model.roi_heads, "keypoint_on", False)
        if mask_on or keypoint_on:
            augmented_instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
            outputs = self._batch_inference(augmented_inputs, augmented_instances)
            del augmented_inputs, augmented_instances
            if mask_on:
                merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
            if keypoint_on:
                self._reduce_pred_keypoints(outputs, tfms, merged)
        return {"instances": detector_postprocess(merged, *orig_shape)}

    def _get_augmented_boxes(
        self, augmented_inputs: list[dict[str, Any]], tfms: list[T.TransformList]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of all augmented inputs in original-image coordinates: ``(D, 4)`` boxes, ``(D,)``
        scores and ``(D,)`` classes."""
        outputs = self._batch_inference(augmented_inputs)
        all_boxes, all_scores, all_classes = [], [], []
        for output, tfm in zip(outputs, tfms):
            if isinstance(output.pred_boxes, RotatedBoxes):
                raise ValueError("GeneralizedRCNNWithTTA: rotated boxes are not supported (axis-aligned only).")
            pred_boxes = output.pred_boxes.tensor
            original = tfm.inverse().apply_box(pred_boxes.detach().cpu().numpy())
            all_boxes.append(torch.as_tensor(original, dtype=pred_boxes.dtype, device=pred_boxes.device))
            all_scores.append(output.scores)
            all_classes.append(output.pred_classes)
        return torch.cat(all_boxes, dim=0), torch.cat(all_scores, dim=0), torch.cat(all_classes, dim=0)

    def _merge_detections(
        self, all_boxes: torch.Tensor, all_scores: torch.Tensor, all_classes: torch.Tensor, shape_hw: tuple[int, int]
    ) -> Instances:
        """Per-class NMS over the union of the augmented detections, with the model's test thresholds."""
        num_classes = self.model.roi_heads.num_classes
        scores_2d = torch.zeros(len(all_boxes), num_classes + 1, dtype=all_scores.dtype, device=all_boxes.device)
        scores_2d[torch.arange(len(all_boxes), device=all_boxes.device), all_classes] = all_scores
        predictor = self._box_predictor[0]
        merged, _ = fast_rcnn_inference_single_image(
            all_boxes,
            scores_2d,
            shape_hw,
            _MERGE_SCORE_THRESH,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        return merged

    def _rescale_detected_boxes(
        self, augmented_inputs: list[dict[str, Any]], merged: Instances, tfms: list[T.TransformList]
    ) -> list[Instances]:
        """The merged detections in the coordinates of each augmented input."""
        augmented_instances = []
        boxes = merged.pred_boxes.tensor
        for inputs, tfm in zip(augmented_inputs, tfms):
            aug_boxes = tfm.apply_box(boxes.detach().cpu().numpy())
            augmented_instances.append(
                Instances(
                    tuple(inputs["image"].shape[1:3]),
                    pred_boxes=Boxes(torch.as_tensor(aug_boxes, dtype=boxes.dtype, device=boxes.device)),
                    pred_classes=merged.pred_classes,
                    scores=merged.scores,
                )
            )
        return augmented_instances

    @staticmethod
    def _reduce_pred_masks(outputs: list[Instances], tfms: list[T.TransformList]) -> torch.Tensor:
        """Average of the ``(D, 1, M, M)`` box-relative mask probabilities of every augmentation; box-relative
        masks are scale invariant, so only flips are undone."""
        masks = []
        for output, tfm in zip(outputs, tfms):
            m = output.pred_masks
            masks.append(m.flip(dims=[3]) if _is_flipped(tfm) else m)
        return torch.stack(masks, dim=0).mean(dim=0)

    def _reduce_pred_keypoints(self, outputs: list[Instances], tfms: list[T.TransformList], merged: Instances) -> None:
        """Average the keypoints of every augmentation in original-image coordinates (flipped ones with left
        and right swapped) into ``merged.pred_keypoints`` ``(D, K, 3)``, and the un-flipped
        ``pred_keypoint_heatmaps`` ``(D, K, S, S)`` when the model gives them."""
        keypoints, heatmaps = [], []
        for output, tfm in zip(outputs, tfms):
            kp = output.pred_keypoints
            num, k = kp.shape[:2]
            xy = tfm.inverse().apply_coords(kp[:, :, :2].detach().reshape(-1, 2).cpu().numpy().astype(np.float64))
            kp = torch.cat([torch.as_tensor(xy, dtype=kp.dtype, device=kp.device).view(num, k, 2), kp[:, :, 2:]], dim=2)
            hm = output.get("pred_keypoint_heatmaps") if output.has("pred_keypoint_heatmaps") else None
            if _is_flipped(tfm):
                flip_indices = self._flip_indices(k, kp.device)
                kp = kp[:, flip_indices]
                if hm is not None:
                    hm = hm.flip(dims=[3])[:, flip_indices]
            keypoints.append(kp)
            if hm is not None:
                heatmaps.append(hm)
        merged.pred_keypoints = torch.stack(keypoints, dim=0).mean(dim=0)
        if len(heatmaps) == len(outputs):
            merged.pred_keypoint_heatmaps = torch.stack(heatmaps, dim=0).mean(dim=0)

    def _flip_indices(self, num_keypoints: int, device: torch.device) -> torch.Tensor:
        if self.keypoint_flip_indices is None:
            raise ValueError(
                "GeneralizedRCNNWithTTA: flipped keypoints need `keypoint_flip_indices` or `metadata` (with "
                "keypoint_names and keypoint_flip_map) to swap left and right keypoints."
            )
        if self.keypoint_flip_indices.numel() != num_keypoints:
            raise ValueError(
                f"GeneralizedRCNNWithTTA: `keypoint_flip_indices` has {self.keypoint_flip_indices.numel()} entries "
                f"but the model predicts {num_keypoints} keypoints."
            )
        return self.keypoint_flip_indices.to(device)
