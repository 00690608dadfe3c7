"""Helpers of the DensePose tests (a module of its own name: ``conftest`` is ambiguous across projects)."""

import os

from libdet.config import LazyConfig

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = os.path.join(_PROJECT_ROOT, "configs")


def tiny_densepose_config(name: str = "densepose_rcnn_R_50_FPN_s1x.py"):
    """The lazy config ``name`` shrunk for unit tests: ResNet-18 layout with 16-channel stem, FPN and decoder of
    32 channels, a 2-conv DensePose head of 32 channels (GroupNorm still has 32 groups); same structure."""
    cfg = LazyConfig.load(os.path.join(CONFIGS, name))
    bottom_up = cfg.model.backbone.bottom_up
    bottom_up.stem.out_channels = 16
    bottom_up.stages.update(depth=18, stem_out_channels=16, res2_out_channels=16, norm="BN")
    bottom_up.stages.pop("stride_in_1x1")
    bottom_up.stem.norm = "BN"
    bottom_up.freeze_at = 0
    cfg.model.backbone.out_channels = 32
    roi = cfg.model.roi_heads
    roi.box_head.fc_dims = [64, 64]
    roi.box_predictor.input_shape.channels = 64
    roi.batch_size_per_image = 64
    roi.decoder.update(conv_dims=32, num_classes=32)
    roi.densepose_head.update(num_stacked_convs=2, conv_head_dim=32)
    if "nonlocal_on" in roi.densepose_head:
        roi.densepose_head.aspp_channels = 32
    cfg.model.proposal_generator.post_nms_topk = (100, 50)
    cfg.model.proposal_generator.pre_nms_topk = (200, 100)
    return cfg
