"""RetinaNet on a MobileNetV3-Large FPN at 320 px: a low-latency one-stage CPU detector (COCO 2017, 3x schedule).

Images resized to a 320-px shorter side (longer side at most 640); a 128-channel FPN on the stride-8/16/32 outputs
with P6/P7 computed from P5 (cheaper than from the 960-channel last backbone output); a light head of two
128-channel convs per branch instead of four 256-channel ones; 300 candidates per level at test time.

As ``mask_rcnn_mnv3_fpn_320.py``: torchvision's ImageNet MobileNetV3-Large weights through ``train.init_checkpoint``,
frozen BatchNorm, RGB input with torchvision's normalisation.
"""

from libdet.config import LazyCall as L
from libdet.modeling.backbone import MobileNetV3

from ..common.coco_schedule import lr_multiplier_3x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.retinanet import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up = L(MobileNetV3)(
    arch="large",
    norm="FrozenBN",
    out_features=["s2", "s3", "s4"],
    freeze_at=2,
    weights=None,
)
model.backbone.out_channels = 128
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = "${..out_channels}"

model.head.conv_dims = [128, 128]
model.test_topk_candidates = 300

model.input_format = "RGB"
model.pixel_mean = [123.675, 116.280, 103.530]
model.pixel_std = [58.395, 57.120, 57.375]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator.tasks = ["bbox"]

dataloader.train.mapper.augmentations[0].short_edge_length = (256, 288, 320, 352)
dataloader.train.mapper.augmentations[0].max_size = 640
dataloader.test.mapper.augmentations[0].short_edge_length = 320
dataloader.test.mapper.augmentations[0].max_size = 640

optimizer.lr = 0.01
optimizer.weight_decay = 4e-5
train.init_checkpoint = "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth?matching_heuristics=True"
