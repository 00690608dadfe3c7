"""``TensorMaskHead``: class, box and mask towers, per-size mask predictors, bipyramid fusion, aligned masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import ShapeSpec

from .layers import SwapAlign2Nat

__all__ = ["TensorMaskHead"]


def _tower(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1), nn.ReLU()]
        in_channels = channels
    return nn.Sequential(*layers)


class TensorMaskHead(nn.Module):
    """The TensorMask head, shared by all levels.

    Args:
        input_shape: one :class:`ShapeSpec` per level, high to low resolution (all with the same channels).
        num_classes: number of foreground classes.
        num_anchors: anchors per location (one per mask size).
        mask_sizes: side of the masks predicted at the first level, one per anchor (anchor size / stride).
        num_convs: convolutions in each tower.
        cls_channels, bbox_channels, mask_channels: widths of the class, box and mask towers.
        mask_on: predict masks.
        aligned_on: predict masks in the aligned representation and convert them to the natural one with
            :class:`SwapAlign2Nat` (else predict natural masks directly).
        bipyramid_on: tensor bipyramid: every level's mask features are upsampled to the first level's
            resolution, averaged-in with it (sum, then a fusing conv) and predict masks ``2**level`` times
            larger, converted to the level's own resolution by ``SwapAlign2Nat(2**level)`` (needs
            ``aligned_on``).
        pad_val: the background logit that ``SwapAlign2Nat`` reads outside the map.

    ``forward(features: list[Tensor[N, C, Hi, Wi]])`` returns ``(pred_logits, pred_deltas, pred_masks)``:
    per level ``Tensor[N, A*K, Hi, Wi]`` and ``Tensor[N, A*4, Hi, Wi]``; and per level a list of one
    ``Tensor[N, M*M, Hi, Wi]`` per anchor (``M = mask_sizes[a] * 2**level`` with the bipyramid), or None
    when ``mask_on`` is False.

    Parameter names equal detectron2's (``cls_subnet``, ``cls_score``, ``bbox_subnet``, ``bbox_pred``,
    ``mask_subnet``, ``mask_pred_<MM>``, ``mask_fuse``).
    """

    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        mask_sizes: list[int],
        num_convs: int = 4,
        cls_channels: int = 256,
        bbox_channels: int = 128,
        mask_channels: int = 128,
        mask_on: bool = True,
        aligned_on: bool = True,
        bipyramid_on: bool = True,
        pad_val: float = -6.0,
    ):
        super().__init__()
        if not input_shape:
            raise ValueError("TensorMaskHead: `input_shape` must list at least one level.")
        in_channels = input_shape[0].channels
        if any(s.channels != in_channels for s in input_shape):
            raise ValueError(
                f"TensorMaskHead: all levels must have the same channels, got {[s.channels for s in input_shape]}."
            )
        if mask_on and len(mask_sizes) != num_anchors:
            raise ValueError(
                f"TensorMaskHead: `mask_sizes` {list(mask_sizes)} must have one size per anchor ({num_anchors})."
            )
        if bipyramid_on and not aligned_on:
            raise ValueError(
                "TensorMaskHead: `bipyramid_on` needs `aligned_on` (masks are converted by SwapAlign2Nat)."
            )
        self.num_levels = len(input_shape)
        self.num_classes = num_classes
        self.mask_sizes = list(mask_sizes)
        self.mask_on = mask_on
        self.aligned_on = aligned_on
        self.bipyramid_on = bipyramid_on

        self.cls_subnet = _tower(in_channels, cls_channels, num_convs)
        cls_in = cls_channels if num_convs else in_channels
        self.cls_score = nn.Conv2d(cls_in, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_subnet = _tower(in_channels, bbox_channels, num_convs)
        bbox_in = bbox_channels if num_convs else in_channels
        self.bbox_pred = nn.Conv2d(bbox_in, num_anchors * 4, kernel_size=3, stride=1, padding=1)
        initialized: list[nn.Module] = [self.cls_subnet, self.cls_score, self.bbox_subnet, self.bbox_pred]

        if mask_on:
            self.mask_subnet = _tower(in_channels, mask_channels, num_convs)
            mask_in = mask_channels if num_convs else in_channels
            initialized.append(self.mask_subnet)
            for size in self.mask_sizes:
                predictor = nn.Conv2d(mask_in, size * size, kernel_size=1, stride=1, padding=0)
                self.add_module(self._predictor_name(size), predictor)
                initialized.append(predictor)
            if aligned_on:
                levels = range(self.num_levels) if bipyramid_on else [0]
                # No parameters: detectron2's checkpoints hold none of these names.
                self.align2nat = nn.ModuleList([SwapAlign2Nat(2**lvl, pad_val) for lvl in levels])
                if bipyramid_on:
                    self.mask_fuse = nn.Sequential(
                        nn.Conv2d(mask_in, mask_in, kernel_size=3, stride=1, padding=1), nn.ReLU()
                    )
                    initialized.append(self.mask_fuse)

        for module in initialized:
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0, std=0.01)
                    nn.init.constant_(layer.bias, 0)
        # Prior probability 0.01 of foreground, for a stable start of the focal loss.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - 0.01) / 0.01))

    @staticmethod
    def _predictor_name(size: int) -> str:
        return f"mask_pred_{size:02d}"

    def forward(self, features: list[torch.Tensor]):
        if len(features) != self.num_levels:
            raise ValueError(f"TensorMaskHead: expected {self.num_levels} feature levels, got {len(features)}.")
        pred_logits = [self.cls_score(self.cls_subnet(x)) for x in features]
        pred_deltas = [self.bbox_pred(self.bbox_subnet(x)) for x in features]
        if not self.mask_on:
            return pred_logits, pred_deltas, None

        mask_feats = [self.mask_subnet(x) for x in features]
        if self.bipyramid_on:
            # Every level at the first level's resolution, fused with it.
            high_res = mask_feats[0]
            height, width = high_res.shape[-2:]
            fused = []
            for lvl, feat in enumerate(mask_feats):
                if lvl > 0:
                    feat = F.interpolate(feat, scale_factor=2.0**lvl, mode="bilinear", align_corners=False)
                fused.append(self.mask_fuse(feat[:, :, :height, :width] + high_res))
            mask_feats = fused

        pred_masks = []
        for lvl, feat in enumerate(mask_feats):
            per_anchor = []
            for size in self.mask_sizes:
                masks = getattr(self, self._predictor_name(size))(feat)
                if self.aligned_on:
                    masks = self.align2nat[lvl if self.bipyramid_on else 0](masks)
                per_anchor.append(masks)
            pred_masks.append(per_anchor)
        return pred_logits, pred_deltas, pred_masks
