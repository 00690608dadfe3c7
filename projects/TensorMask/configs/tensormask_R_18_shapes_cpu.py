"""A small TensorMask for the built-in synthetic shapes dataset (3 classes, 224-256 px images), trained from
scratch on CPU::

    python tools/lazyconfig_train_net.py --config-file projects/TensorMask/configs/tensormask_R_18_shapes_cpu.py

The architecture of the COCO model (average-fused FPN, two anchors per location, aligned masks, tensor
bipyramid, FL* / L1 / weighted BCE) at CPU size: a half-width ResNet-18 (32-64-128-256 channels, trainable
BatchNorm), a 64-channel FPN with four levels p2-p5 (the objects are 12-140 px), anchors of 16 and 24 px at p2
(4 x 4 and 6 x 6 masks there, 32 x 32 and 48 x 48 at p5), two convolutions per tower; AdamW with warmup and
cosine decay, 4 images per iteration. See the project README for the time and the AP measured here.
"""

from fvcore.common.param_scheduler import CosineParamScheduler

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.solver import WarmupParamScheduler

from ....configs.common.data.shapes import dataloader
from ....configs.common.optim import AdamW as optimizer
from .tensormask_R_50_FPN_1x import model, train

_FEATURE = L(ShapeSpec)(channels="${....backbone.out_channels}")

model.backbone.bottom_up.stem.update(out_channels=32, norm="BN")
model.backbone.bottom_up.stages.update(depth=18, norm="BN", stem_out_channels=32, res2_out_channels=32)
model.backbone.bottom_up.stages.pop("stride_in_1x1")  # BasicBlock has a single 3x3 conv per branch
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.backbone.top_block = None  # p2-p5
model.pixel_std = [57.375, 57.120, 58.395]

model.head_in_features = ["p2", "p3", "p4", "p5"]
model.anchor_generator.sizes = [[16, 24], [32, 48], [64, 96], [128, 192]]
model.anchor_generator.strides = [4, 8, 16, 32]
model.head.input_shape = [_FEATURE, _FEATURE, _FEATURE, _FEATURE]
model.head.mask_sizes = [4, 6]  # the p2 anchor sizes (16, 24) over the p2 stride (4)
model.head.update(num_convs=2, cls_channels=64, bbox_channels=32, mask_channels=32)
model.num_classes = 3
model.topk_candidates = 1000

optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.02),
    warmup_length=0.05,
    warmup_factor=0.01,
)

dataloader.train.num_workers = 1

train.init_checkpoint = ""
train.output_dir = "./output/shapes_tensormask_r18_cpu"
train.max_iter = 400  # measured 2.7 s per iteration on one shared core: 18 minutes, plus 1.3 for the evaluation
train.checkpointer.period = 200
train.eval_period = 0  # evaluate once, after training
train.checkpointer.max_to_keep = 2
train.log_period = 20
train.seed = 0
train.device = "auto"
