"""Panoptic DETR R50 on COCO panoptic (paper: 43.4 PQ): a DETR R50 trained to box both things and stuff (133
classes), frozen, plus the mask head (attention maps over the encoder memory, FPN-style conv decoder fed by
res4-res2, focal + dice losses), trained alone for 25 epochs. Set ``train.init_checkpoint`` to the box-trained
DETR (libdet layout: ``detr.*`` keys come from a DETRSegm checkpoint; convert a detection-only checkpoint with
``projects/DETR/tools/convert_weights.py --wrap-segm``) or to converted official panoptic weights.

    python tools/lazyconfig_train_net.py --config-file projects/DETR/configs/detr_r50_panoptic.py \\
        --num-gpus 8 train.init_checkpoint=detr_r50_boxes_133.pth
"""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `detr` package on sys.path: keep it first)

# isort: split

from detr.panoptic_mapper import PanopticDETRDatasetMapper
from detr.segmentation import DETRSegm, MaskHeadSmallConv, MHAttentionMap
from fvcore.common.param_scheduler import MultiStepParamScheduler

from libdet.config import LazyCall as L
from libdet.data import get_detection_dataset_dicts
from libdet.evaluation import COCOPanopticEvaluator

from .detr_r50 import dataloader, optimizer, train  # noqa: F401  (config keys)
from .detr_r50 import model as _detr

_detr.backbone.out_features = ["res2", "res3", "res4", "res5"]
_detr.num_classes = 133  # COCO panoptic: 80 things (contiguous 0-79: their ids come first) + 53 stuff

model = L(DETRSegm)(
    detr=_detr,
    bbox_attention=L(MHAttentionMap)(query_dim=256, hidden_dim=256, num_heads=8, dropout=0.0),
    mask_head=L(MaskHeadSmallConv)(dim=256 + 8, fpn_dims=[1024, 512, 256], context_dim=256),
    mask_in_features=["res4", "res3", "res2"],
    freeze_detr=True,
    loss_mask=1.0,
    loss_dice=1.0,
    is_thing=[True] * 80 + [False] * 53,
    panoptic_threshold=0.85,
)

dataloader.train.dataset = L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic", filter_empty=False)
# the detection mappers with their augmentations, made to read panoptic segments instead of boxes
dataloader.train.mapper._target_ = PanopticDETRDatasetMapper
dataloader.train.mapper.pop("use_instance_mask")
dataloader.train.aspect_ratio_grouping = False  # panoptic dataset dicts carry no image sizes
dataloader.test.dataset = L(get_detection_dataset_dicts)(names="coco_2017_val_panoptic", filter_empty=False)
dataloader.test.mapper._target_ = PanopticDETRDatasetMapper
dataloader.evaluator = L(COCOPanopticEvaluator)(dataset_name="${..test.dataset.names}")

# 25 epochs of 1849 iterations (64 images), lr / 10 after 20 (our choice; the paper gives only the 25 epochs)
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[20 * 1849], num_updates=25 * 1849)
train.max_iter = 25 * 1849
train.output_dir = "./output/detr_r50_panoptic"
train.checkpointer.period = 5 * 1849
train.eval_period = 5 * 1849
