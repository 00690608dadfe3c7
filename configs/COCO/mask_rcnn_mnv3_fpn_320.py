"""Mask R-CNN on a MobileNetV3-Large FPN at 320 px: a low-latency CPU detector (COCO 2017, 3x schedule).

In the spirit of torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn``: images resized to a 320-px shorter side
(longer side at most 640), a light 128-channel FPN on the stride-8/16/32 outputs (P3-P6), fewer proposals (150 per
image at test time) and small box/mask heads.

The backbone starts from torchvision's ImageNet MobileNetV3-Large weights (``train.init_checkpoint``, matched by
name suffix: ``features.*`` -> ``backbone.bottom_up.features.*``), with frozen BatchNorm and a frozen stem and first
stage as detectron2 fine-tunes its ResNets. The weights can also be given to the backbone itself
(``model.backbone.bottom_up.weights=IMAGENET1K_V1``, a torchvision weights name or a local file). Without network
access, download the file elsewhere and pass its local path as ``train.init_checkpoint``.

Images are fed as RGB with torchvision's ImageNet normalisation, as the MobileNetV3 weights expect.
"""

from libdet.config import LazyCall as L
from libdet.modeling.backbone import MobileNetV3

from ..common.coco_schedule import lr_multiplier_3x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

# Backbone: MobileNetV3-Large, outputs s2-s4 (strides 8, 16, 32) -> FPN P3-P5 + P6 (max pool)
model.backbone.bottom_up = L(MobileNetV3)(
    arch="large",
    norm="FrozenBN",
    out_features=["s2", "s3", "s4"],
    freeze_at=2,
    weights=None,
)
model.backbone.out_channels = 128

# RPN on P3-P6: two anchor sizes per level (an octave apart by sqrt(2)), three aspect ratios
model.proposal_generator.in_features = ["p3", "p4", "p5", "p6"]
model.proposal_generator.head.num_anchors = 6
model.proposal_generator.anchor_generator.sizes = [[32, 45.25], [64, 90.51], [128, 181.02], [256, 362.04]]
model.proposal_generator.anchor_generator.strides = [8, 16, 32, 64]
model.proposal_generator.pre_nms_topk = (1000, 150)
model.proposal_generator.post_nms_topk = (500, 150)

# ROI heads on P3-P5, half-width box head and a 2-conv 128-channel mask head
model.roi_heads.batch_size_per_image = 256
model.roi_heads.box_in_features = ["p3", "p4", "p5"]
model.roi_heads.box_pooler.scales = (1.0 / 8, 1.0 / 16, 1.0 / 32)
model.roi_heads.box_head.fc_dims = [512, 512]
model.roi_heads.box_predictor.input_shape.channels = "${...box_head.fc_dims[1]}"
model.roi_heads.mask_in_features = ["p3", "p4", "p5"]
model.roi_heads.mask_pooler.scales = (1.0 / 8, 1.0 / 16, 1.0 / 32)
model.roi_heads.mask_head.conv_dims = [128, 128]

# RGB input with torchvision's ImageNet normalisation (what the MobileNetV3 weights were trained with)
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.280, 103.530]
model.pixel_std = [58.395, 57.120, 57.375]
dataloader.train.mapper.image_format = "RGB"

# 320-px shorter side
dataloader.train.mapper.augmentations[0].short_edge_length = (256, 288, 320, 352)
dataloader.train.mapper.augmentations[0].max_size = 640
dataloader.test.mapper.augmentations[0].short_edge_length = 320
dataloader.test.mapper.augmentations[0].max_size = 640

optimizer.weight_decay = 4e-5  # small networks are easily over-regularised (MobileNet's own recipe)
train.init_checkpoint = "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth?matching_heuristics=True"
