"""Semantic segmentation: ``SemanticSegmentor`` (backbone -> per-pixel head) and the Semantic FPN head of
Panoptic FPN (https://arxiv.org/abs/1901.02446)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import Conv2d, ShapeSpec, get_norm
from libdet.structures import ImageList
from libdet.utils.fvcore_nn import c2_msra_fill

from ..postprocessing import sem_seg_postprocess
from ..registries import SEM_SEG_HEADS_REGISTRY  # noqa: F401 (detectron2 path; YAML names)
from .rcnn import _ImageNormalizer

__all__ = ["SemanticSegmentor", "SemSegFPNHead"]


def _padded_sem_seg_targets(
    owner: str, batched_inputs: list[dict[str, Any]], backbone: nn.Module, ignore_value: int, device: torch.device
) -> torch.Tensor:
    """Stack the ``"sem_seg"`` maps of a batch into ``(N, H, W)`` int64, padded as the images are (to the
    backbone's size divisibility) with ``ignore_value``."""
    targets = []
    for i, x in enumerate(batched_inputs):
        if "sem_seg" not in x:
            raise ValueError(f"{owner}: training needs a semantic map under batched_inputs[{i}]['sem_seg'].")
        target = x["sem_seg"]
        if not isinstance(target, torch.Tensor) or target.dim() != 2:
            raise ValueError(
                f"{owner}: batched_inputs[{i}]['sem_seg'] must be an (H, W) tensor of class ids, got "
                f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}."
            )
        if "image" in x and tuple(target.shape) != tuple(x["image"].shape[-2:]):
            raise ValueError(
                f"{owner}: batched_inputs[{i}]['sem_seg'] has shape {tuple(target.shape)} but the image is "
                f"{tuple(x['image'].shape[-2:])}."
            )
        targets.append(target.to(device=device, dtype=torch.int64))
    return ImageList.from_tensors(
        targets, backbone.size_divisibility, ignore_value, padding_constraints=backbone.padding_constraints
    ).tensor


def _scripted_sem_seg_postprocess(
    results: torch.Tensor, batched_inputs: list[dict[str, torch.Tensor]], image_sizes: list[tuple[int, int]]
) -> list[dict[str, torch.Tensor]]:
    """The inference postprocessing of :class:`SemanticSegmentor` under TorchScript, whose inputs hold tensors
    only: :func:`sem_seg_postprocess` of each image to its ``"height"``/``"width"`` (0-d tensors; default:
    the image size)."""
    processed: list[dict[str, torch.Tensor]] = []
    for i, size in enumerate(image_sizes):
        x = batched_inputs[i]
        height = int(x["height"]) if "height" in x else size[0]
        width = int(x["width"]) if "width" in x else size[1]
        processed.append({"sem_seg": sem_seg_postprocess(results[i], size, height, width)})
    return processed


class SemanticSegmentor(_ImageNormalizer):
    """A semantic segmentation model: backbone features -> ``sem_seg_head`` per-pixel class scores.

    Inputs are lists of dicts with ``"image"`` (``(C, H, W)``, 0-255), ``"sem_seg"`` (``(H, W)`` int64
    class ids; needed in training) and optionally ``"height"``/``"width"`` (output resolution).
    """

    def __init__(
        self, *, backbone: nn.Module, sem_seg_head: nn.Module, pixel_mean: Sequence[float], pixel_std: Sequence[float]
    ):
        """
        Args:
            backbone: a :class:`Backbone`.
            sem_seg_head: maps ``(features, targets or None)`` to ``(scores (N, C, H, W) or None, losses)``,
                e.g. :class:`SemSegFPNHead`; has ``ignore_value``.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self._register_pixel_stats("SemanticSegmentor", pixel_mean, pixel_std)

    def preprocess_image(self, batched_inputs: list[dict[str, torch.Tensor]]) -> ImageList:
        """Normalise the images and pad them into an :class:`ImageList` as the backbone requires."""
        return ImageList.from_tensors(
            self._normalized_images(batched_inputs),
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    def forward(self, batched_inputs: list[dict[str, torch.Tensor]]):
        """Training: ``{"loss_sem_seg": ...}``. Inference: per image, ``{"sem_seg": (C, height, width)}``
        class scores at the requested output size (default: the input image size).

        ``batched_inputs`` is annotated for TorchScript (:func:`libdet.export.scripting_with_instances`),
        where the dicts hold tensors only (``"height"``/``"width"``, if given, as 0-d tensors)."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        targets = None
        if self.training:
            targets = _padded_sem_seg_targets(
                "SemanticSegmentor", batched_inputs, self.backbone, self.sem_seg_head.ignore_value, self.device
            )
        results, losses = self.sem_seg_head(features, targets)
        if self.training:
            return losses
        if torch.jit.is_scripting():
            assert results is not None  # inference: the head returns the scores
            return _scripted_sem_seg_postprocess(results, batched_inputs, images.image_sizes)
        processed = []
        for result, x, size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append({"sem_seg": sem_seg_postprocess(result, size, height, width)})
        return processed


class SemSegFPNHead(nn.Module):
    """The semantic branch of Panoptic FPN: each FPN level goes through ``log2(stride / common_stride)``
    (at least one) 3x3 conv + norm + ReLU blocks, each followed by a 2x bilinear upsampling while the
    level is coarser than ``common_stride``; the levels are summed and a 1x1 ``predictor`` gives the class
    logits at ``common_stride``, upsampled to the input resolution.

    Submodules are named after the input features (``p2``, ``p3``, ...) and ``predictor``, as in
    detectron2.
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        loss_weight: float = 1.0,
        norm: str | None = None,
        ignore_value: int = -1,
    ):
        """
        Args:
            input_shape: shape (``channels``, ``stride``) of each input feature, by name.
            num_classes: number of semantic classes ``C``.
            conv_dims: channels of the intermediate convs.
            common_stride: stride at which the levels are merged (a power of two, at most the smallest
                input stride).
            loss_weight: multiplier of ``loss_sem_seg``.
            norm: normalisation after each conv (e.g. ``"GN"``); ``None``/``""`` for none (convs then have
                a bias).
            ignore_value: target value that is not counted in the loss.
        """
        super().__init__()
        if not input_shape:
            raise ValueError("SemSegFPNHead: `input_shape` must not be empty.")
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        for name, shape in shapes:
            if shape.stride is None or shape.channels is None:
                raise ValueError(f"SemSegFPNHead: input_shape[{name!r}] needs `channels` and `stride`, got {shape}.")
            if shape.stride < common_stride:
                raise ValueError(
                    f"SemSegFPNHead: input_shape[{name!r}] has stride {shape.stride}, finer than "
                    f"common_stride={common_stride}."
                )
        self.in_features = [name for name, _ in shapes]
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.num_classes = num_classes

        self.scale_heads: list[nn.Module] = []
        for name, shape in shapes:
            ops: list[nn.Module] = []
            length = max(1, int(math.log2(shape.stride) - math.log2(common_stride)))
            for k in range(length):
                conv = Conv2d(
                    shape.channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                c2_msra_fill(conv)
                ops.append(conv)
                if shape.stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            head = nn.Sequential(*ops)
            self.add_module(name, head)  # state-dict keys "p2.0.weight", ... as detectron2
            self.scale_heads.append(head)
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1, stride=1, padding=0)
        c2_msra_fill(self.predictor)

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """
        Args:
            features: backbone features by name (must contain :attr:`in_features`).
            targets: ``(N, H, W)`` int64 class ids at the input (padded) resolution; needed in training.

        Returns:
            training: ``(None, {"loss_sem_seg"})``; inference: ``((N, C, H, W)`` logits at the input
            resolution ``, {})``.
        """
        x = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("SemSegFPNHead: training needs `targets` (N, H, W).")
            return None, self.losses(x, targets)
        # float(): TorchScript's interpolate takes a float scale (eager converts the int to one anyway)
        x = F.interpolate(x, scale_factor=float(self.common_stride), mode="bilinear", align_corners=False)
        return x, {}

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, C, H / common_stride, W / common_stride)`` logits: the sum of the scale heads, then the
        predictor."""
        if torch.jit.is_scripting():
            return self._scripted_layers(features)
        # A loop, not a filtered comprehension: TorchScript cannot even parse the latter in skipped code.
        missing = []
        for name in self.in_features:
            if name not in features:
                missing.append(name)
        if missing:
            raise ValueError(f"SemSegFPNHead: features {missing} are missing; got {sorted(features)}.")
        x = None
        for name, head in zip(self.in_features, self.scale_heads):
            y = head(features[name])
            x = y if x is None else x + y
        return self.predictor(x)

    def _scripted_layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`layers` for TorchScript, which cannot iterate the plain ``scale_heads`` list (the heads are
        registered under the feature names, for detectron2's state-dict keys): it loops over the children,
        registered in ``in_features`` order, so the sum is taken in the same order as in eager mode."""
        x: torch.Tensor | None = None
        for name, head in self.named_children():
            if name in self.in_features:
                y = head(features[name])
                x = y if x is None else x + y
        assert x is not None  # in_features is not empty (checked in __init__)
        return self.predictor(x)

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-pixel cross-entropy, averaged over the pixels whose target is not ``ignore_value`` (0, still
        connected to the graph, when there is none), times ``loss_weight``.

        Args:
            predictions: ``(N, C, h, w)`` logits at ``common_stride``.
            targets: ``(N, h * common_stride, w * common_stride)`` int64 class ids.
        """
        predictions = F.interpolate(
            predictions.float(), scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        if predictions.shape[-2:] != targets.shape[-2:] or predictions.shape[0] != targets.shape[0]:
            raise ValueError(
                f"SemSegFPNHead: targets of shape {tuple(targets.shape)} do not match the upsampled predictions "
                f"{tuple(predictions.shape)} (the inputs must be padded to the backbone's size divisibility)."
            )
        valid = targets != self.ignore_value
        valid_ids = targets[valid]
        if valid_ids.numel() and (valid_ids.min() < 0 or valid_ids.max() >= self.num_classes):
            raise ValueError(
                f"SemSegFPNHead: semantic targets must be in [0, {self.num_classes}) or ignore_value="
                f"{self.ignore_value}; got values in [{int(valid_ids.min())}, {int(valid_ids.max())}]."
            )
        loss = F.cross_entropy(predictions, targets, reduction="sum", ignore_index=self.ignore_value)
        loss = loss / valid.sum().clamp(min=1)
        return {"loss_sem_seg": loss * self.loss_weight}
