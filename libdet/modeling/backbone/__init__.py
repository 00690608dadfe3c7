"""Backbones: the :class:`Backbone` contract, ResNet / ResNeXt, RegNet, MobileNetV3, ViT (with ViTDet's simple feature
pyramid), MViTv2, Swin and the FPN neck
(``detectron2.modeling.backbone`` compatible; built directly or with ``LazyCall``, no registry).
"""

from .backbone import Backbone
from .build import (
    BACKBONE_REGISTRY,
    build_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from .mobilenet import MobileNetV3
from .mvit import MViT
from .regnet import RegNet
from .resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    ResNetBlockBase,
    make_stage,
)
from .swin import SwinTransformer
from .vit import SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate

__all__ = [k for k in globals().keys() if not k.startswith("_")]
