"""DensePose R-CNN R50-FPN, s1x schedule (detectron2's ``densepose_rcnn_R_50_FPN_s1x``): Faster R-CNN R50-FPN for
one class (person; box pooler ROIAlign 7x7, sampling ratio 2) plus the DensePose branch: a Panoptic-FPN-style
decoder fusing p2-p5 at stride 4, a 28x28 ROIAlign pooler, the V1ConvX head (8 x 3x3 conv, 512) and the chart
predictor (2 coarse-segmentation channels, 25 fine parts, U, V at 112 x 112). Instantiating ``model`` gives the
state-dict keys and shapes of detectron2's model-zoo checkpoint.

16 images per iteration, SGD lr 0.01, 130k iterations (lr / 10 at 100k and 120k), on the DensePose COCO 2014
train + valminusminival splits, evaluated on minival::

    python tools/lazyconfig_train_net.py --config-file projects/DensePose/configs/densepose_rcnn_R_50_FPN_s1x.py
"""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `densepose` package on sys.path: keep it first)

# isort: split

from densepose.data import DensePoseDatasetMapper, default_evaluation_asset_path, default_uv_symmetries_path
from densepose.evaluation import DensePoseCOCOEvaluator, SMPLGeodesicDistances
from densepose.modeling import (
    Decoder,
    DensePoseChartLoss,
    DensePoseChartPredictor,
    DensePoseROIHeads,
    DensePoseV1ConvXHead,
)
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from libdet.modeling.poolers import ROIPooler
from libdet.solver import WarmupParamScheduler

from ....configs.common.models.mask_rcnn_fpn import model
from ....configs.common.optim import SGD as optimizer
from ....configs.common.train import train

_roi_heads = model.roi_heads
model.roi_heads = L(DensePoseROIHeads)(
    num_classes=1,
    batch_size_per_image=_roi_heads.batch_size_per_image,
    positive_fraction=_roi_heads.positive_fraction,
    proposal_matcher=_roi_heads.proposal_matcher,
    box_in_features=_roi_heads.box_in_features,
    box_pooler=_roi_heads.box_pooler,
    box_head=_roi_heads.box_head,
    box_predictor=_roi_heads.box_predictor,
    densepose_in_features=["p2", "p3", "p4", "p5"],
    decoder=L(Decoder)(
        in_features="${..densepose_in_features}",
        in_strides=[4, 8, 16, 32],
        in_channels="${...backbone.out_channels}",
        conv_dims=256,
        num_classes=256,
        common_stride=4,
        norm="",
    ),
    # with the decoder, one stride-4 map is pooled
    densepose_pooler=L(ROIPooler)(output_size=28, scales=(1.0 / 4,), sampling_ratio=2, pooler_type="ROIAlign"),
    densepose_head=L(DensePoseV1ConvXHead)(
        in_channels="${..decoder.num_classes}", num_stacked_convs=8, conv_head_dim=512, conv_head_kernel=3
    ),
    densepose_predictor=L(DensePoseChartPredictor)(
        in_channels="${..densepose_head.conv_head_dim}",
        num_coarse_segm_channels=2,
        num_patches=24,
        deconv_kernel=4,
        up_scale=2,
    ),
    densepose_loss=L(DensePoseChartLoss)(
        heatmap_size=112, w_points=0.01, w_part=1.0, w_segm=5.0, num_coarse_segm_channels=2
    ),
    densepose_fg_iou_threshold=0.7,
)
model.roi_heads.box_predictor.num_classes = "${..num_classes}"
model.roi_heads.box_pooler.update(sampling_ratio=2, pooler_type="ROIAlign")

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names=("densepose_coco_2014_train", "densepose_coco_2014_valminusminival")),
    mapper=L(DensePoseDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(640, 672, 704, 736, 768, 800), max_size=1333, sample_style="choice"
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        uv_symmetries_path=L(default_uv_symmetries_path)(),
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="densepose_coco_2014_minival", filter_empty=False),
    mapper=L(DensePoseDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="BGR",
    ),
    num_workers=4,
)
# GPS, GPSm and mask-IoU AP; the geodesic distances need detectron2's SMPL assets (not bundled, see the README)
dataloader.evaluator = L(DensePoseCOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    distances=L(SMPLGeodesicDistances)(
        smpl_subdiv_path=L(default_evaluation_asset_path)(file_name="SMPL_subdiv.mat"),
        pdist_transform_path=L(default_evaluation_asset_path)(file_name="SMPL_SUBDIV_TRANSFORM.mat"),
        pdist_matrix_path=L(default_evaluation_asset_path)(file_name="Pdist_matrix.pkl"),
    ),
    modes=("GPS", "GPSm", "IOU"),
)

optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[100000, 120000, 130000]),
    warmup_length=1000 / 130000,
    warmup_factor=0.1,
)

train.max_iter = 130000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "./output/densepose_rcnn_R_50_FPN_s1x"
