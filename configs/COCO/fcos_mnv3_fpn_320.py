"""FCOS on a MobileNetV3-Large FPN at 320 px: an anchor-free low-latency CPU detector (COCO 2017, 3x schedule).

``retinanet_mnv3_fpn_320.py`` with FCOS's head (GroupNorm, centerness branch; two 128-channel convs per branch)
and no anchors. Same data, backbone weights and optimizer.
"""

from ..common.models.fcos import model
from .retinanet_mnv3_fpn_320 import dataloader, lr_multiplier, optimizer, train
from .retinanet_mnv3_fpn_320 import model as retinanet_model

model.backbone = retinanet_model.backbone  # P6/P7 from P5 already, as FCOS wants
model.head.conv_dims = [128, 128]
model.test_topk_candidates = 300
model.pixel_mean = retinanet_model.pixel_mean
model.pixel_std = retinanet_model.pixel_std
del retinanet_model

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
