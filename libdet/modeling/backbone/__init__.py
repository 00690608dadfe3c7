"""Backbones: the :class:`Backbone` contract, ResNet / ResNeXt, RegNet and the FPN neck
(``detectron2.modeling.backbone`` compatible; built directly or with ``LazyCall``, no registry).
"""

from .backbone import Backbone
from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7
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

__all__ = [k for k in globals().keys() if not k.startswith("_")]
