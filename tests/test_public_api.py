"""libdet keeps detectron2's public module paths and names (porting is ``s/detectron2/libdet/``).

``D2_PUBLIC_NAMES`` lists names per module, with a few libdet additions. ``tests/d2_public_api.md`` is a copy of
the project's reference list of detectron2's public names (every module, the YAML layer and the legacy names
included): :func:`test_every_reference_name_exists` checks all of them.
"""

import importlib
import re
from pathlib import Path

import pytest

D2_PUBLIC_NAMES = {
    "libdet.config": ["LazyCall", "LazyConfig", "instantiate"],
    "libdet.structures": [
        "BitMasks",
        "BoxMode",
        "Boxes",
        "ImageList",
        "Instances",
        "Keypoints",
        "PolygonMasks",
        "ROIMasks",
        "RotatedBoxes",
        "boxes",
        "heatmaps_to_keypoints",
        "image_list",
        "instances",
        "keypoints",
        "masks",
        "pairwise_ioa",
        "pairwise_iou",
        "pairwise_iou_rotated",
        "pairwise_point_box_distance",
        "polygons_to_bitmask",
        "rotated_boxes",
    ],
    "libdet.layers": [
        "ASPP",
        "BatchNorm2d",
        "CNNBlockBase",
        "Conv2d",
        "ConvTranspose2d",
        "CycleBatchNormList",
        "DeformConv",
        "DepthwiseSeparableConv2d",
        "FrozenBatchNorm2d",
        "Linear",
        "ModulatedDeformConv",
        "NaiveSyncBatchNorm",
        "ROIAlign",
        "ROIAlignRotated",
        "ShapeSpec",
        "aspp",
        "batch_norm",
        "batched_nms",
        "batched_nms_rotated",
        "blocks",
        "cat",
        "ciou_loss",
        "cross_entropy",
        "deform_conv",
        "diou_loss",
        "empty_input_loss_func_wrapper",
        "get_norm",
        "interpolate",
        "losses",
        "mask_ops",
        "move_device_like",
        "nms",
        "nms_rotated",
        "nonzero_tuple",
        "paste_masks_in_image",
        "roi_align",
        "roi_align_rotated",
        "shape_spec",
        "shapes_to_tensor",
        "wrappers",
    ],
    "libdet.data": [
        "DatasetCatalog",
        "DatasetFromList",
        "DatasetMapper",
        "MapDataset",
        "Metadata",
        "MetadataCatalog",
        "ToIterableDataset",
        "build",
        "build_batch_data_loader",
        "build_detection_test_loader",
        "build_detection_train_loader",
        "catalog",
        "common",
        "dataset_mapper",
        "datasets",
        "detection_utils",
        "get_detection_dataset_dicts",
        "load_proposals_into_dataset",
        "print_instances_class_histogram",
        "samplers",
        "transforms",
    ],
    "libdet.data.transforms": [
        "AugInput",
        "Augmentation",
        "AugmentationList",
        "BlendTransform",
        "ColorTransform",
        "CropTransform",
        "ExtentTransform",
        "FixedSizeCrop",
        "GridSampleTransform",
        "HFlipTransform",
        "MinIoURandomCrop",
        "NoOpTransform",
        "PILColorTransform",
        "PadTransform",
        "RandomApply",
        "RandomBrightness",
        "RandomContrast",
        "RandomCrop",
        "RandomCrop_CategoryAreaConstraint",
        "RandomExtent",
        "RandomFlip",
        "RandomLighting",
        "RandomResize",
        "RandomRotation",
        "RandomSaturation",
        "Resize",
        "ResizeScale",
        "ResizeShortestEdge",
        "ResizeTransform",
        "RotationTransform",
        "ScaleTransform",
        "StandardAugInput",
        "Transform",
        "TransformGen",
        "TransformList",
        "VFlipTransform",
        "apply_augmentations",
        "apply_transform_gens",
        "augmentation",
        "augmentation_impl",
        "transform",
    ],
    "libdet.data.datasets": [
        "builtin",
        "builtin_meta",
        "cityscapes",
        "coco",
        "coco_panoptic",
        "convert_to_coco_json",
        "get_lvis_instances_meta",
        "load_coco_json",
        "load_lvis_json",
        "load_sem_seg",
        "load_voc_instances",
        "lvis",
        "pascal_voc",
        "register_coco_instances",
        "register_coco_panoptic",
        "register_coco_panoptic_separated",
        "register_lvis_instances",
        "register_pascal_voc",
    ],
    "libdet.data.samplers": [
        "GroupedBatchSampler",
        "InferenceSampler",
        "RandomSubsetTrainingSampler",
        "RepeatFactorTrainingSampler",
        "TrainingSampler",
    ],
    "libdet.evaluation": [
        "COCOEvaluator",
        "COCOPanopticEvaluator",
        "CityscapesInstanceEvaluator",
        "CityscapesSemSegEvaluator",
        "DatasetEvaluator",
        "DatasetEvaluators",
        "LVISEvaluator",
        "PascalVOCDetectionEvaluator",
        "RotatedCOCOEvaluator",
        "SemSegEvaluator",
        "cityscapes_evaluation",
        "coco_evaluation",
        "evaluator",
        "fast_eval_api",
        "inference_context",
        "inference_on_dataset",
        "lvis_evaluation",
        "panoptic_evaluation",
        "pascal_voc_evaluation",
        "print_csv_format",
        "rotated_coco_evaluation",
        "sem_seg_evaluation",
        "testing",
        "verify_results",
    ],
    "libdet.utils.visualizer": [
        "ColorMode",
        "VisImage",
        "Visualizer",
    ],
    "libdet.modeling": [
        "Backbone",
        "BaseKeypointRCNNHead",
        "BaseMaskRCNNHead",
        "DatasetMapperTTA",
        "FCOS",
        "FPN",
        "FastRCNNOutputLayers",
        "GeneralizedRCNN",
        "GeneralizedRCNNWithTTA",
        "PanopticFPN",
        "ProposalNetwork",
        "ROIHeads",
        "ResNet",
        "ResNetBlockBase",
        "RetinaNet",
        "SemanticSegmentor",
        "StandardROIHeads",
        "anchor_generator",
        "backbone",
        "box_regression",
        "detector_postprocess",
        "make_stage",
        "matcher",
        "meta_arch",
        "poolers",
        "postprocessing",
        "proposal_generator",
        "roi_heads",
        "sampling",
        "test_time_augmentation",
    ],
    "libdet.modeling.backbone": [
        "Backbone",
        "BasicStem",
        "BottleneckBlock",
        "FPN",
        "RegNet",
        "ResNet",
        "ResNetBlockBase",
        "backbone",
        "fpn",
        "make_stage",
        "regnet",
        "resnet",
    ],
    "libdet.modeling.proposal_generator": [
        "RPN",
        "StandardRPNHead",
        "proposal_utils",
        "rpn",
        "rrpn",
    ],
    "libdet.modeling.roi_heads": [
        "BaseKeypointRCNNHead",
        "BaseMaskRCNNHead",
        "CascadeROIHeads",
        "FastRCNNConvFCHead",
        "FastRCNNOutputLayers",
        "KRCNNConvDeconvUpsampleHead",
        "MaskRCNNConvUpsampleHead",
        "ROIHeads",
        "RROIHeads",
        "Res5ROIHeads",
        "StandardROIHeads",
        "box_head",
        "cascade_rcnn",
        "fast_rcnn",
        "keypoint_head",
        "mask_head",
        "roi_heads",
        "rotated_fast_rcnn",
        "select_foreground_proposals",
    ],
    "libdet.modeling.meta_arch": [
        "DenseDetector",
        "FCOS",
        "GeneralizedRCNN",
        "PanopticFPN",
        "ProposalNetwork",
        "RetinaNet",
        "SemanticSegmentor",
        "dense_detector",
        "fcos",
        "panoptic_fpn",
        "rcnn",
        "retinanet",
        "semantic_seg",
    ],
    "libdet.engine": [
        "AMPTrainer",
        "DEFAULT_TIMEOUT",
        "HookBase",
        "SimpleTrainer",
        "TrainerBase",
        "launch",
        "resolve_device",
        "train_loop",
    ],
    "libdet.engine.launch": [
        "DEFAULT_TIMEOUT",
        "DistributedEnv",
        "EnvWorld",
        "LocalWorld",
        "World",
        "launch",
        "run_in_process_group",
    ],
    "libdet.engine.slurm": ["EXECUTORS", "SubmititEntryPoint", "SubmititWorld", "resolve_job_config"],
    "libdet.solver": [
        "LRMultiplier",
        "LRScheduler",
        "WarmupCosineLR",
        "WarmupMultiStepLR",
        "WarmupParamScheduler",
        "build",
        "get_default_optimizer_params",
        "lr_scheduler",
    ],
    "libdet.checkpoint": ["Checkpointer", "DetectionCheckpointer", "PeriodicCheckpointer"],
    "libdet.model_zoo": ["get", "get_checkpoint_url", "get_config", "get_config_file"],
    "libdet.utils.events": [
        "CommonMetricPrinter",
        "EventStorage",
        "JSONWriter",
        "TensorboardXWriter",
        "get_event_storage",
        "has_event_storage",
    ],
    "libdet.utils.comm": [
        "all_gather",
        "create_local_process_group",
        "gather",
        "get_local_process_group",
        "get_local_rank",
        "get_local_size",
        "get_rank",
        "get_world_size",
        "is_main_process",
        "reduce_dict",
        "shared_random_seed",
        "synchronize",
    ],
    "libdet.utils.logger": ["log_every_n", "log_every_n_seconds", "log_first_n", "setup_logger"],
    "libdet.utils.file_io": ["PathHandler", "PathManager"],
    "libdet.utils.env": ["seed_all_rng"],
}


@pytest.mark.parametrize("module_name", sorted(D2_PUBLIC_NAMES))
def test_detectron2_public_names_exist(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in D2_PUBLIC_NAMES[module_name] if not hasattr(module, name)]
    assert not missing, f"{module_name} lacks detectron2's public names: {missing}"


def test_import_libdet_is_cheap():
    import subprocess
    import sys

    code = "import sys, libdet; print(sorted(m for m in sys.modules if m.startswith(('torch', 'libdet.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"'import libdet' imported: {out}"


REFERENCE = Path(__file__).with_name("d2_public_api.md")


def _reference_names() -> dict[str, list[str]]:
    """``{libdet module: [names]}`` from ``d2_public_api.md`` (module attributes such as ``__file__`` left out)."""
    sections = re.findall(r"^## (\S+)\n(.*)$", REFERENCE.read_text(), flags=re.MULTILINE)
    table = {}
    for module, line in sections:
        names = [n for n in re.findall(r"`([^`]+)`", line) if not n.startswith("__")]
        table[module.replace("detectron2", "libdet", 1)] = names
    return table


REFERENCE_NAMES = _reference_names()


def test_reference_list_is_complete():
    assert len(REFERENCE_NAMES) == 24 and sum(map(len, REFERENCE_NAMES.values())) == 384
    assert (
        "get_cfg" in REFERENCE_NAMES["libdet.config"]
        and "lvis_v1_categories" in REFERENCE_NAMES["libdet.data.datasets"]
    )


@pytest.mark.parametrize("module_name", sorted(REFERENCE_NAMES))
def test_every_reference_name_exists(module_name):
    module = importlib.import_module(module_name)
    missing = [n for n in REFERENCE_NAMES[module_name] if not hasattr(module, n)]
    assert not missing, f"{module_name} lacks detectron2's public names: {missing}"


# detectron2 modules outside the reference list that libdet also provides.
D2_EXTRA_NAMES = {
    "libdet.tracking": [
        "BaseTracker",
        "BBoxIOUTracker",
        "BaseHungarianTracker",
        "VanillaHungarianBBoxIOUTracker",
        "IOUWeightedHungarianBBoxIOUTracker",
        "TRACKER_HEADS_REGISTRY",
        "build_tracker_head",
    ],
    "libdet.utils.testing": [
        "assert_instances_allclose",
        "convert_scripted_instances",
        "get_model_no_weights",
        "get_sample_coco_image",
        "has_dynamic_axes",
        "min_torch_version",
        "random_boxes",
        "register_custom_op_onnx_export",
        "reload_script_model",
        "skipIfOnCPUCI",
        "skipIfUnsupportedMinOpsetVersion",
        "skipIfUnsupportedMinTorchVersion",
        "unregister_custom_op_onnx_export",
    ],
    "libdet.utils.analysis": [
        "FlopCountAnalysis",
        "activation_count_operators",
        "flop_count_operators",
        "parameter_count",
        "parameter_count_table",
    ],
    "libdet.utils.collect_env": ["collect_env_info"],
    "libdet.utils.memory": ["retry_if_cuda_oom"],
    "libdet.utils.serialize": ["PicklableWrapper"],
    "libdet.layers.mask_ops": ["paste_masks_in_image", "pad_masks", "scale_boxes"],
    "libdet.checkpoint.c2_model_loading": [
        "align_and_update_state_dicts",
        "convert_basic_c2_names",
        "convert_c2_detectron_names",
    ],
    "libdet.data.datasets.cityscapes_panoptic": ["load_cityscapes_panoptic", "register_all_cityscapes_panoptic"],
    "libdet.utils.events.EventStorage": ["count_samples"],
}


@pytest.mark.parametrize("module_name", sorted(D2_EXTRA_NAMES))
def test_detectron2_extra_modules(module_name):
    if module_name.endswith(".EventStorage"):  # a class: its methods
        module = importlib.import_module(module_name.rsplit(".", 1)[0]).EventStorage
    else:
        module = importlib.import_module(module_name)
    missing = [name for name in D2_EXTRA_NAMES[module_name] if not hasattr(module, name)]
    assert not missing, f"{module_name} lacks detectron2's names: {missing}"
