"""The default YAML config: every key and default value of detectron2's ``config/defaults.py`` (VERSION 2).

Keys that end in ``_TRAIN`` / ``_TEST`` apply to training / inference only. :func:`libdet.config.get_cfg` returns
a copy; :mod:`libdet.config.yaml_translate` maps each key to an argument of libdet's modules and tools.
"""

from .config import CfgNode as CN

__all__ = []

_C = CN()

# Version of the key layout; files of older versions are upgraded when merged (see compat.py).
_C.VERSION = 2

_C.MODEL = CN()
_C.MODEL.LOAD_PROPOSALS = False
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
_C.MODEL.DEVICE = "cuda"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Checkpoint loaded into the model: a path or a URL (detectron2://, https://, catalog://).
_C.MODEL.WEIGHTS = ""
# Normalisation of the input, in INPUT.FORMAT channel order. MSRA / Caffe2 ResNets absorb the std into
# conv1, hence std 1; torchvision-style weights use the ImageNet std [57.375, 57.120, 58.395].
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

_C.INPUT = CN()
# Shorter side at training time: one value of the tuple ("choice") or a value in its range ("range").
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Shorter side at test time; 0 disables resizing.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# "horizontal", "vertical" or "none"
_C.INPUT.RANDOM_FLIP = "horizontal"
# Random crop before resizing; SIZE is relative for "relative" / "relative_range", pixels for "absolute"
# and "absolute_range".
_C.INPUT.CROP = CN({"ENABLED": False})
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
# Channel order of the model input: "BGR", or a PIL mode ("RGB", "L", ...).
_C.INPUT.FORMAT = "BGR"
# "polygon" or "bitmask"
_C.INPUT.MASK_FORMAT = "polygon"

_C.DATASETS = CN()
# Names registered in DatasetCatalog; the training sets are concatenated.
_C.DATASETS.TRAIN = ()
# Precomputed proposal files, one per dataset of DATASETS.TRAIN / TEST.
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
_C.DATASETS.TEST = ()
_C.DATASETS.PROPOSAL_FILES_TEST = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Batch portrait and landscape images separately.
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
# "TrainingSampler", "RepeatFactorTrainingSampler" or "RandomSubsetTrainingSampler"
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
# RepeatFactorTrainingSampler: category-frequency threshold, and whether to take the square root.
_C.DATALOADER.REPEAT_THRESHOLD = 0.0
_C.DATALOADER.REPEAT_SQRT = True
# Drop training images without (non-crowd) annotations.
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# Freeze the stem (1) and the first FREEZE_AT - 1 residual stages.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.FPN = CN()
# Backbone features fed to the FPN, with contiguous power-of-2 strides, e.g. ["res2", "res3", "res4", "res5"].
_C.MODEL.FPN.IN_FEATURES = []
_C.MODEL.FPN.OUT_CHANNELS = 256
# "" or "GN" (any get_norm name)
_C.MODEL.FPN.NORM = ""
# "sum" or "avg"
_C.MODEL.FPN.FUSE_TYPE = "sum"

_C.MODEL.PROPOSAL_GENERATOR = CN()
# "RPN", "RRPN" or "PrecomputedProposals"
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
# Proposals with a side below MIN_SIZE (input pixels) are dropped.
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
# SIZES[i] (sqrt of anchor areas, input pixels) for the i-th input feature; one entry applies to all.
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
# Height / width ratios, per feature as SIZES.
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# Angles (degrees) of rotated anchors, per feature as SIZES.
_C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]
# Offset of the first anchor centre from the image corner, in strides, in [0, 1).
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
_C.MODEL.RPN.IN_FEATURES = ["res4"]
# Drop anchors further than this many pixels outside the image; -1 keeps all.
_C.MODEL.RPN.BOUNDARY_THRESH = -1
# Anchor labels by IoU: < 0.3 negative (0), in between ignored (-1), >= 0.7 positive (1).
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# "smooth_l1", "giou", "diou" or "ciou"
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# 0.0: plain L1
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Proposals kept before NMS (per feature level with FPN) and after NMS (per image).
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Channels of the head's hidden convs; -1: the input channels.
_C.MODEL.RPN.CONV_DIMS = [-1]

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
# Proposals with IoU >= 0.5 are foreground.
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Inference: detections scoring below SCORE_THRESH_TEST are dropped, NMS at NMS_THRESH_TEST.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
# Add the ground-truth boxes to the proposals when training.
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True

_C.MODEL.ROI_BOX_HEAD = CN()
# Unused by C4 models (Res5ROIHeads); "FastRCNNConvFCHead" otherwise.
_C.MODEL.ROI_BOX_HEAD.NAME = ""
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
# "", "GN" or "SyncBN"
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
# Train the mask / keypoint heads on the box head's predicted boxes instead of the proposals.
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False
# Federated loss and sigmoid cross-entropy (LVIS).
_C.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
_C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50

_C.MODEL.ROI_BOX_CASCADE_HEAD = CN()
# One entry per cascade stage.
_C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = (
    (10.0, 10.0, 5.0, 5.0),
    (20.0, 20.0, 10.0, 10.0),
    (30.0, 30.0, 15.0, 15.0),
)
_C.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "KRCNNConvDeconvUpsampleHead"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = tuple(512 for _ in range(8))
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17
# Training images with fewer visible keypoints are dropped.
_C.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1
# Normalise the keypoint loss by the visible keypoints of the batch (True) or by the keypoints a full batch
# of positives would have (False; then LOSS_WEIGHT 4.0 is the usual choice).
_C.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = True
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
# Label of ignored pixels.
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0

_C.MODEL.PANOPTIC_FPN = CN()
# Multiplies the losses of the instance branch.
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0
# Combining instance and semantic outputs at inference (COMBINE.ENABLED is kept for old configs, unused).
_C.MODEL.PANOPTIC_FPN.COMBINE = CN({"ENABLED": True})
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5

_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 80
_C.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
# Convs of the classification and box towers (the output conv not included).
_C.MODEL.RETINANET.NUM_CONVS = 4
# Anchor labels by IoU: < 0.4 negative, in between ignored, >= 0.5 positive.
_C.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]
_C.MODEL.RETINANET.IOU_LABELS = [0, -1, 1]
# Initial foreground probability of the classifier (sets its bias).
_C.MODEL.RETINANET.PRIOR_PROB = 0.01
_C.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
_C.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000
_C.MODEL.RETINANET.NMS_THRESH_TEST = 0.5
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
_C.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1
_C.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "smooth_l1"
# "" or "GN" (BatchNorm variants would be shared across levels)
_C.MODEL.RETINANET.NORM = ""

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
# "res4" for C4 backbones, res2..res5 for FPN
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]
# 1: ResNet; > 1: ResNeXt
_C.MODEL.RESNETS.NUM_GROUPS = 1
# "FrozenBN", "GN", "SyncBN", "BN"
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Stride in the first 1x1 conv (MSRA ResNets) instead of the 3x3 conv (Caffe2 / torchvision).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# 2: dilated res5 (DC5)
_C.MODEL.RESNETS.RES5_DILATION = 1
# Output channels of res2 (64 for R18 / R34) and of the stem.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable 3x3 convs in res2, res3, res4, res5; modulated (DCNv2) or not (DCNv1).
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]
_C.MODEL.RESNETS.DEFORM_MODULATED = False
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1

_C.SOLVER = CN()
# "WarmupMultiStepLR", "WarmupCosineLR" or "WarmupStepWithFixedGammaLR"
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
# Final lr of WarmupCosineLR.
_C.SOLVER.BASE_LR_END = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
# Weight decay of normalisation layers' parameters.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.GAMMA = 0.1
# Iterations where the lr is multiplied by GAMMA.
_C.SOLVER.STEPS = (30000,)
# Decays of WarmupStepWithFixedGammaLR.
_C.SOLVER.NUM_DECAYS = 3
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
# Stretch the schedule after warmup over the remaining iterations.
_C.SOLVER.RESCALE_INTERVAL = False
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Images per iteration over all processes.
_C.SOLVER.IMS_PER_BATCH = 16
# World size the config was written for; when > 0, DefaultTrainer.auto_scale_workers rescales batch size,
# lr and schedule to the actual world size.
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
# Detectron1 style: biases with BIAS_LR_FACTOR x lr and their own weight decay (None: WEIGHT_DECAY).
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})
# "value": clip each gradient element; "norm": each parameter's gradient norm; "full_model": the global norm.
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN({"ENABLED": False})

_C.TEST = CN()
# [[task, metric, value, tolerance], ...] checked after evaluation.
_C.TEST.EXPECTED_RESULTS = []
# Evaluate every EVAL_PERIOD iterations during training; 0: only at the end.
_C.TEST.EVAL_PERIOD = 0
# Keypoint OKS sigmas; empty: COCO's.
_C.TEST.KEYPOINT_OKS_SIGMAS = []
_C.TEST.DETECTIONS_PER_IMAGE = 100
_C.TEST.AUG = CN({"ENABLED": False})
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True
_C.TEST.PRECISE_BN = CN({"ENABLED": False})
_C.TEST.PRECISE_BN.NUM_ITER = 200

_C.OUTPUT_DIR = "./output"
# < 0: random seed; >= 0: fixed seed.
_C.SEED = -1
_C.CUDNN_BENCHMARK = False
# torch.set_float32_matmul_precision: "", "highest", "high" or "medium".
_C.FLOAT32_PRECISION = ""
# Visualise training batches every VIS_PERIOD iterations; 0 disables.
_C.VIS_PERIOD = 0

# For quick experiments: set GLOBAL.* in a file or on the command line and read libdet.config.global_cfg.
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0
