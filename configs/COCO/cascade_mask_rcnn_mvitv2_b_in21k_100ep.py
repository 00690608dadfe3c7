"""Cascade Mask R-CNN with an MViTv2-B FPN backbone, 100 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_mvitv2_b_in21k_100ep.py``).

MViTv2-B (96 channels, 24 blocks, stages ending at blocks 1, 4, 20, 23) with drop path 0.4, from ImageNet-21k
pre-training; an FPN with LayerNorm on its four stages, two convs in the RPN head, three cascade stages of
4conv1fc heads with LayerNorm; RGB input. AdamW lr 8e-5, weight decay 0.1, no layer-wise lr decay,
the ViTDet 100-epoch schedule at 64 images per iteration.
"""

from libdet.config import LazyCall as L
from libdet.modeling.backbone import MViT
from libdet.modeling.backbone.utils import layer_norm

from ..common.data.coco_loader_lsj import dataloader
from ..common.models.cascade_rcnn import model
from ..common.optim import AdamW as optimizer
from .mask_rcnn_vitdet_b_100ep import lr_multiplier, train

model.pixel_mean = [123.675, 116.28, 103.53]  # ImageNet, RGB, 0-255
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
model.backbone.bottom_up = L(MViT)(
    embed_dim=96,
    depth=24,
    num_heads=1,
    last_block_indexes=(1, 4, 20, 23),
    residual_pooling=True,
    drop_path_rate=0.4,
    norm_layer=L(layer_norm)(eps=1e-6),
    out_features=("scale2", "scale3", "scale4", "scale5"),
)
model.backbone.in_features = "${.bottom_up.out_features}"
model.backbone.square_pad = 1024
model.backbone.norm = "LN"  # LayerNorm in the FPN
model.proposal_generator.head.conv_dims = [-1, -1]  # two 3x3 convs in the RPN head
model.roi_heads.box_heads[0].update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="LN")
model.roi_heads.box_heads[1].update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="LN")
model.roi_heads.box_heads[2].update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="LN")
model.roi_heads.mask_head.conv_norm = "LN"

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_B_in21k.pyth"

optimizer.lr = 8e-5
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
