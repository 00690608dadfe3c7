"""``BACKBONE_REGISTRY`` and ``build_backbone(cfg)`` of detectron2's YAML config layer.

The builders registered here translate the YAML config into the lazy config of a ResNet / FPN backbone (see
:mod:`libdet.config.yaml_model`) and instantiate it: the same modules a lazy config builds.
"""

from __future__ import annotations

from typing import Any

from libdet.modeling.registries import BACKBONE_REGISTRY

__all__ = [
    "BACKBONE_REGISTRY",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
]


def _build(cfg: Any, input_shape: Any, name: str) -> Any:
    from libdet.config import instantiate
    from libdet.config.yaml_model import backbone_config

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.NAME = name
    node, _ = backbone_config(cfg, input_shape)
    return instantiate(node)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg: Any, input_shape: Any = None) -> Any:
    """The ResNet / ResNeXt of ``MODEL.RESNETS`` (outputs ``MODEL.RESNETS.OUT_FEATURES``)."""
    return _build(cfg, input_shape, "build_resnet_backbone")


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg: Any, input_shape: Any = None) -> Any:
    """ResNet + FPN (``MODEL.FPN``) with a max-pooled P6."""
    return _build(cfg, input_shape, "build_resnet_fpn_backbone")


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_backbone(cfg: Any, input_shape: Any = None) -> Any:
    """ResNet + FPN with P6 / P7 computed from res5 (RetinaNet)."""
    return _build(cfg, input_shape, "build_retinanet_resnet_fpn_backbone")


BUILTIN_BACKBONES = {
    "build_resnet_backbone": build_resnet_backbone,
    "build_resnet_fpn_backbone": build_resnet_fpn_backbone,
    "build_retinanet_resnet_fpn_backbone": build_retinanet_resnet_fpn_backbone,
}


def build_backbone(cfg: Any, input_shape: Any = None) -> Any:
    """The backbone named by ``MODEL.BACKBONE.NAME`` (a ``Backbone``).

    Args:
        cfg: a YAML config (``CfgNode``).
        input_shape: ``ShapeSpec`` of the input; default ``len(MODEL.PIXEL_MEAN)`` channels.
    """
    from libdet.config import instantiate
    from libdet.config.yaml_model import backbone_config

    node, _ = backbone_config(cfg, input_shape)
    return instantiate(node)
