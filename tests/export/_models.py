"""Tiny models of every exportable family with random but calibrated weights: detections exist (the
classifiers are biased towards foreground) and mask probabilities vary across the mask (so that few
pixels sit at the 0.5 threshold, where float rounding could flip them)."""

from __future__ import annotations

import torch
from torch import nn

from libdet.config import instantiate
from tests.modeling import _tiny_models as tiny

# family -> config builder of tests/modeling/_tiny_models.py
FAMILIES = {
    "mask_rcnn_fpn": tiny.tiny_mask_rcnn_fpn,
    "mask_rcnn_c4": tiny.tiny_mask_rcnn_c4,
    "keypoint_rcnn_fpn": tiny.tiny_keypoint_rcnn_fpn,
    "cascade_mask_rcnn_fpn": tiny.tiny_cascade_mask_rcnn_fpn,
    "retinanet": tiny.tiny_retinanet,
    "fcos": tiny.tiny_fcos,
    "panoptic_fpn": tiny.tiny_panoptic_fpn,
    "semantic_fpn": tiny.tiny_semantic_fpn,
}

# (export sample, two test images of other sizes, a batch of two) per family: (H, W) sizes. FCOS pads to
# multiples of 128 and its GroupNorm needs more than one value per channel on p7: images above 128 px.
_SIZES = {"default": ((96, 128), (80, 112), (130, 90), (104, 120))}
_SIZES["fcos"] = ((136, 160), (150, 200), (200, 140), (144, 176))


def _calibrate(model: nn.Module) -> None:
    heads = getattr(model, "roi_heads", None)
    if heads is not None:
        predictors = heads.box_predictor if isinstance(heads.box_predictor, nn.ModuleList) else [heads.box_predictor]
        for predictor in predictors:
            nn.init.normal_(predictor.cls_score.weight, std=0.05)
            predictor.cls_score.bias.data[:-1] += 2.0  # foreground probabilities above the test threshold
        if getattr(heads, "mask_on", False):
            nn.init.normal_(heads.mask_head.predictor.weight, std=0.5)
    head = getattr(model, "head", None)
    if head is not None and hasattr(head, "cls_score"):
        nn.init.normal_(head.cls_score.weight, std=0.05)
        nn.init.zeros_(head.cls_score.bias)


def build(family: str) -> nn.Module:
    """The calibrated tiny model of ``family`` in eval mode (seeded)."""
    torch.manual_seed(0)
    model = instantiate(FAMILIES[family]()).eval()
    _calibrate(model)
    return model


def images(family: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The export sample ``(1, 3, H, W)`` and the comparison batches: two single images of other sizes
    and a batch of two (all 0-255, seeded)."""
    sample, a, b, pair = _SIZES.get(family, _SIZES["default"])
    g = torch.Generator().manual_seed(1)
    rand = lambda n, hw: torch.rand(n, 3, *hw, generator=g) * 255  # noqa: E731
    return rand(1, sample), [rand(1, a), rand(1, b), rand(2, pair)]
