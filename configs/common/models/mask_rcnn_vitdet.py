"""Mask R-CNN with a ViT-B backbone and a simple feature pyramid (ViTDet): detectron2's
``projects/ViTDet/configs/common/mask_rcnn_vitdet.py``.

ViT-B/16 at 1024 px with 14 x 14 windows in all blocks but 2, 5, 8, 11 (global), decomposed relative position
biases, and ``p2``-``p6`` from its stride-16 output; LayerNorm in the pyramid and the heads, two convs in the
RPN head, a 4conv1fc box head; RGB input with ImageNet statistics. Instantiating ``model`` gives detectron2's
state-dict keys and shapes.
"""

from libdet.config import LazyCall as L
from libdet.modeling.backbone import SimpleFeaturePyramid, ViT
from libdet.modeling.backbone.fpn import LastLevelMaxPool
from libdet.modeling.backbone.utils import layer_norm

from .mask_rcnn_fpn import model

model.pixel_mean = [123.675, 116.28, 103.53]  # ImageNet, RGB, 0-255
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

embed_dim, depth, num_heads, dp = 768, 12, 12, 0.1
model.backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=1024,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_path_rate=dp,
        window_size=14,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=L(layer_norm)(eps=1e-6),
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],  # blocks 2, 5, 8, 11 attend globally
        residual_block_indexes=[],
        use_rel_pos=True,
        out_feature="last_feat",
    ),
    in_feature="${.net.out_feature}",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=1024,
)

model.roi_heads.box_head.conv_norm = "LN"
model.roi_heads.mask_head.conv_norm = "LN"
model.proposal_generator.head.conv_dims = [-1, -1]  # two 3x3 convs in the RPN head
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]  # 4conv1fc
model.roi_heads.box_head.fc_dims = [1024]
