"""DensePose R-CNN on the built-in synthetic DensePose set (``densepose_synthetic_train`` / ``_val``: 128 px images
of rectangle people with exact parts and UVs, generated on first use), trained from scratch on CPU. The R50-FPN
layout of the s1x model, narrowed (stem 32, res2 64 channels, bottleneck width 16, trainable BatchNorm), FPN and
decoder of 64 channels, a 4-conv V1ConvX head of 64 channels; flips use the set's UV symmetry tables::

    python tools/lazyconfig_train_net.py --config-file projects/DensePose/configs/densepose_rcnn_R_50_FPN_synthetic_cpu.py

See the README for the time and the AP measured here.
"""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `densepose` package on sys.path: keep it first)

# isort: split


from densepose.data import DensePoseDatasetMapper, synthetic_uv_symmetries_path
from densepose.evaluation import DensePoseCOCOEvaluator, synthetic_geodesic_distances
from fvcore.common.param_scheduler import CosineParamScheduler

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.engine.optimizer_step import ClipGradNorm
from libdet.solver import WarmupParamScheduler

from .densepose_rcnn_R_50_FPN_s1x import dataloader, model, optimizer, train

bottom_up = model.backbone.bottom_up
bottom_up.stem.update(out_channels=32, norm="BN")
bottom_up.stages.update(stem_out_channels=32, res2_out_channels=64, width_per_group=16, norm="BN")
bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.proposal_generator.update(pre_nms_topk=(600, 300), post_nms_topk=(200, 100))
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
roi = model.roi_heads
roi.batch_size_per_image = 128
roi.box_head.fc_dims = [256, 256]
roi.box_predictor.input_shape.channels = 256
roi.decoder.update(conv_dims=64, num_classes=64)
roi.densepose_head.update(num_stacked_convs=4, conv_head_dim=64)
# the DensePose branch runs on every detection at test time: keep few
roi.box_predictor.test_topk_per_image = 20

dataloader.train.dataset.names = "densepose_synthetic_train"
dataloader.train.mapper = L(DensePoseDatasetMapper)(
    is_train=True,
    augmentations=[
        L(T.ResizeShortestEdge)(short_edge_length=(112, 128, 144), max_size=192, sample_style="choice"),
        L(T.RandomFlip)(horizontal=True),
    ],
    image_format="BGR",
    uv_symmetries_path=L(synthetic_uv_symmetries_path)(),
)
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "densepose_synthetic_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=128, max_size=192)]
dataloader.test.num_workers = 1
# geodesic distances on the synthetic (flat) figures: see densepose/evaluation/geodesic.py
dataloader.evaluator = L(DensePoseCOCOEvaluator)(
    dataset_name="${..test.dataset.names}", distances=L(synthetic_geodesic_distances)(), modes=("GPS", "GPSm", "IOU")
)

optimizer.lr = 0.02
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.02),
    warmup_length=0.05,
    warmup_factor=0.01,
)

train.init_checkpoint = ""
train.max_iter = 400
train.eval_period = 0
train.checkpointer.period = 200
train.checkpointer.max_to_keep = 1
train.log_period = 50
train.seed = 0
train.device = "auto"
train.grad_transforms = [L(ClipGradNorm)(max_norm=5.0)]
train.output_dir = "./output/densepose_rcnn_R_50_FPN_synthetic_cpu"
