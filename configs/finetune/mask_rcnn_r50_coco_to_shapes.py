"""Fine-tuning: detectron2's COCO-trained Mask R-CNN R50-FPN (3x) on the 3-class shapes set::

    python tools/lazyconfig_train_net.py --config-file configs/finetune/mask_rcnn_r50_coco_to_shapes.py

``train.init_checkpoint`` names a model-zoo config, which stands for its published weights (downloaded once into
``~/.cache``; a local file path works too). The checkpoint has 80 classes and this model 3: every weight whose
shape fits is loaded, and the class-dependent predictor layers (``roi_heads.box_predictor.cls_score``,
``bbox_pred`` and ``roi_heads.mask_head.predictor``) keep their fresh initialisation; the log lists each skipped
key with both shapes. On your own data, replace the dataset names by specs (``coco:train.json@images``), and the
class count follows the data.

A short schedule at a small learning rate, as fine-tuning usually wants: 600 iterations of 4 images, SGD at 0.005
with warmup, the lr divided by 10 for the last third. The backbone's stem and res2 stay frozen, as in training.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
model.roi_heads.num_classes = 3

optimizer.lr = 0.005
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[400, 600], num_updates=600),
    warmup_length=50 / 600,
    warmup_factor=0.001,
)

train.init_checkpoint = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
train.output_dir = "./output/finetune_mask_rcnn_r50_coco_to_shapes"
train.max_iter = 600
train.eval_period = 0
train.checkpointer.period = 300
train.log_period = 20
train.device = "auto"
