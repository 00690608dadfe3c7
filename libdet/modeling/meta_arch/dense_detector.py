"""``DenseDetector``: the base of one-stage detectors that predict classes and boxes densely on every
feature-map position (RetinaNet, FCOS, ...)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from libdet.structures import Boxes, ImageList, Instances

from ..postprocessing import detector_postprocess
from .rcnn import _ImageNormalizer

__all__ = ["DenseDetector", "permute_to_N_HWA_K"]


def permute_to_N_HWA_K(tensor: torch.Tensor, K: int) -> torch.Tensor:
    """``(N, A*K, H, W)`` -> ``(N, H*W*A, K)``: the anchor order (y, x, a) of the anchor generator."""
    if tensor.dim() != 4:
        raise ValueError(f"permute_to_N_HWA_K: expected a (N, A*K, H, W) tensor, got {list(tensor.shape)}.")
    n, h, w = tensor.shape[0], tensor.shape[2], tensor.shape[3]  # (not unpacked: TorchScript compiles this)
    return tensor.view(n, -1, K, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, K)


class DenseDetector(_ImageNormalizer):
    """Base of dense detectors: normalises the inputs, runs ``backbone`` and ``head`` on
    ``head_in_features``, then dispatches to :meth:`forward_training` (losses) or
    :meth:`forward_inference` (detections), which subclasses implement."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: list[str] | None = None,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            backbone: a :class:`Backbone`.
            head: maps the list of features to a list of per-level predictions (one list per output kind).
            head_in_features: backbone features given to the head, in order; default: all, by stride.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
        """
        super().__init__()
        self.backbone = backbone
        self.head = head
        if head_in_features is None:
            shapes = self.backbone.output_shape()
            head_in_features = sorted(shapes.keys(), key=lambda name: shapes[name].stride)
        self.head_in_features = list(head_in_features)
        self._register_pixel_stats(type(self).__name__, pixel_mean, pixel_std)

    def forward(self, batched_inputs: list[dict[str, torch.Tensor]]):
        """Training: a dict of losses (needs ``"instances"``). Inference: per image,
        ``{"instances": Instances}`` at the requested ``height`` x ``width``. Scripted
        (:func:`libdet.export.scripting_with_instances`, where inputs hold tensors only): per image, the raw
        ``Instances`` at the network input resolution, as in detectron2 (:func:`detector_postprocess` maps them)."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        missing: list[str] = []
        for f in self.head_in_features:  # a loop: TorchScript compiles no filtering comprehension
            if f not in features:
                missing.append(f)
        if len(missing) > 0:
            if torch.jit.is_scripting():
                raise ValueError("head_in_features are not among the backbone outputs.")
            raise ValueError(
                f"{type(self).__name__}: head_in_features {missing} are not among the backbone outputs {sorted(features)}."
            )
        features = [features[f] for f in self.head_in_features]
        predictions = self.head(features)
        if self.training:
            gt_instances = self._gt_instances(batched_inputs)
            if gt_instances is None:
                raise ValueError(
                    f"{type(self).__name__}: training needs ground truth under batched_inputs[i]['instances']."
                )
            return self.forward_training(images, features, predictions, gt_instances)
        results = self.forward_inference(images, features, predictions)
        if torch.jit.is_scripting():
            return results
        processed = []
        for result, x, size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def forward_training(
        self,
        images: ImageList,
        features: list[torch.Tensor],
        predictions: list[list[torch.Tensor]],
        gt_instances: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """The losses of a training batch (implemented by subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `forward_training`.")

    def forward_inference(
        self, images: ImageList, features: list[torch.Tensor], predictions: list[list[torch.Tensor]]
    ) -> list[Instances]:
        """Per image, detections at the network input resolution (implemented by subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `forward_inference`.")

    def preprocess_image(self, batched_inputs: list[dict[str, torch.Tensor]]) -> ImageList:
        """Normalise the images and pad them into an :class:`ImageList` as the backbone requires."""
        return ImageList.from_tensors(
            self._normalized_images(batched_inputs),
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    def _transpose_dense_predictions(
        self, predictions: list[list[torch.Tensor]], dims_per_anchor: list[int]
    ) -> list[list[torch.Tensor]]:
        """Reshape every prediction kind from per-level ``(N, A*K, H, W)`` to ``(N, H*W*A, K)``.

        Args:
            predictions: one list of per-level tensors per prediction kind (e.g. [logits, deltas]).
            dims_per_anchor: ``K`` of each kind (e.g. [num_classes, 4]).
        """
        if len(predictions) != len(dims_per_anchor):
            if torch.jit.is_scripting():  # TorchScript cannot build the message below
                raise ValueError("the number of kinds of predictions differs from len(dims_per_anchor).")
            raise ValueError(
                f"{type(self).__name__}: got {len(predictions)} kinds of predictions but "
                f"{len(dims_per_anchor)} dims_per_anchor."
            )
        return [[permute_to_N_HWA_K(x, k) for x in pred] for pred, k in zip(predictions, dims_per_anchor)]

    def _ema_update(self, name: str, value: float, initial_value: float, momentum: float = 0.9) -> float:
        """Exponential moving average stored as the plain attribute ``name`` (not in the state dict):
        ``old * momentum + value * (1 - momentum)``, starting from ``initial_value``."""
        old = getattr(self, name) if hasattr(self, name) else initial_value
        new = old * momentum + value * (1 - momentum)
        setattr(self, name, new)
        return new

    def _decode_per_level_predictions(
        self,
        anchors: Boxes,
        pred_scores: torch.Tensor,
        pred_deltas: torch.Tensor,
        score_thresh: float,
        topk_candidates: int,
        image_size: tuple[int, int],
    ) -> Instances:
        """Candidates of one level: (anchor, class) pairs with score ``> score_thresh``, the
        ``topk_candidates`` best of them, their boxes decoded with ``self.box2box_transform``.

        Args:
            anchors: ``R = H*W*A`` anchors of the level.
            pred_scores: ``(R, K)`` class probabilities.
            pred_deltas: ``(R, 4)`` box deltas.
            score_thresh, topk_candidates: candidate filtering.
            image_size: ``(height, width)``.

        Returns:
            :class:`Instances` with ``pred_boxes``, ``scores``, ``pred_classes``, by decreasing score.
        """
        keep = pred_scores > score_thresh
        scores = pred_scores[keep]
        idxs = torch.nonzero(keep)  # (C, 2): (anchor, class)
        num = idxs.shape[0]
        num_topk = torch.clamp(num, max=topk_candidates) if isinstance(num, torch.Tensor) else min(num, topk_candidates)
        scores, order = scores.topk(num_topk)
        anchor_idxs, class_idxs = idxs[order].unbind(dim=1)
        boxes = self.box2box_transform.apply_deltas(pred_deltas[anchor_idxs], anchors.tensor[anchor_idxs])
        return Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=class_idxs)

    def _decode_multi_level_predictions(
        self,
        anchors: list[Boxes],
        pred_scores: list[torch.Tensor],
        pred_deltas: list[torch.Tensor],
        score_thresh: float,
        topk_candidates: int,
        image_size: tuple[int, int],
    ) -> Instances:
        """:meth:`_decode_per_level_predictions` on every level, concatenated (level order)."""
        per_level = [
            self._decode_per_level_predictions(a, s, d, score_thresh, topk_candidates, image_size)
            for a, s, d in zip(anchors, pred_scores, pred_deltas)
        ]
        return Instances.cat(per_level)
