"""``ROI_HEADS_REGISTRY``, ``ROI_BOX_HEAD_REGISTRY``, ``ROI_MASK_HEAD_REGISTRY``, ``ROI_KEYPOINT_HEAD_REGISTRY`` and
their ``build_*(cfg, input_shape)`` functions of detectron2's YAML config layer (translated by
:mod:`libdet.config.yaml_model`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from libdet.modeling.registries import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
)

from .box_head import FastRCNNConvFCHead
from .cascade_rcnn import CascadeROIHeads
from .keypoint_head import KRCNNConvDeconvUpsampleHead
from .mask_head import MaskRCNNConvUpsampleHead
from .roi_heads import Res5ROIHeads, StandardROIHeads
from .rotated_fast_rcnn import RROIHeads

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "build_box_head",
    "build_keypoint_head",
    "build_mask_head",
    "build_roi_heads",
]

BUILTIN_ROI_HEADS = {cls.__name__: cls for cls in (StandardROIHeads, Res5ROIHeads, CascadeROIHeads, RROIHeads)}
BUILTIN_BOX_HEADS = {"FastRCNNConvFCHead": FastRCNNConvFCHead}
BUILTIN_MASK_HEADS = {"MaskRCNNConvUpsampleHead": MaskRCNNConvUpsampleHead}
BUILTIN_KEYPOINT_HEADS = {"KRCNNConvDeconvUpsampleHead": KRCNNConvDeconvUpsampleHead}
for _cls in BUILTIN_ROI_HEADS.values():
    ROI_HEADS_REGISTRY.register(_cls)
ROI_BOX_HEAD_REGISTRY.register(FastRCNNConvFCHead)
ROI_MASK_HEAD_REGISTRY.register(MaskRCNNConvUpsampleHead)
ROI_KEYPOINT_HEAD_REGISTRY.register(KRCNNConvDeconvUpsampleHead)


def build_roi_heads(cfg: Any, input_shape: Any) -> nn.Module:
    """The ROI heads of ``MODEL.ROI_HEADS.NAME`` over backbone features ``{name: ShapeSpec}``."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import roi_heads_config

    return instantiate(roi_heads_config(cfg, dict(input_shape)))


def build_box_head(cfg: Any, input_shape: Any) -> nn.Module:
    """The box head of ``MODEL.ROI_BOX_HEAD.NAME`` for pooled features of shape ``input_shape``."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import box_head_config

    return instantiate(box_head_config(cfg, input_shape)[0])


def build_mask_head(cfg: Any, input_shape: Any) -> nn.Module:
    """The mask head of ``MODEL.ROI_MASK_HEAD.NAME`` for pooled features of shape ``input_shape``."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import mask_head_config

    return instantiate(mask_head_config(cfg, input_shape))


def build_keypoint_head(cfg: Any, input_shape: Any) -> nn.Module:
    """The keypoint head of ``MODEL.ROI_KEYPOINT_HEAD.NAME`` for pooled features of shape ``input_shape``."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import keypoint_head_config

    return instantiate(keypoint_head_config(cfg, input_shape))
