"""libdet keeps detectron2's public module paths and names (porting is ``s/detectron2/libdet/``).

The lists are detectron2's public names for the modules implemented so far (see the project's reference
``d2_public_api.md``). Intentionally absent: names that exist only for detectron2's yacs configs (registries,
``build_*`` from a cfg), the fixed LVIS category tables (libdet reads categories from the annotation json),
and what later issues add (keypoint/cascade/FCOS/panoptic/rotated heads, TTA, ViT-family backbones) or
what libdet does not wrap (mmdet).
"""

import importlib

import pytest

D2_PUBLIC_NAMES = {
    "libdet.config": ["LazyCall", "LazyConfig", "instantiate"],
    "libdet.structures": [
        "BitMasks", "BoxMode", "Boxes", "ImageList", "Instances", "Keypoints", "PolygonMasks", "ROIMasks",
        "RotatedBoxes", "boxes", "heatmaps_to_keypoints", "image_list", "instances", "keypoints", "masks",
        "pairwise_ioa", "pairwise_iou", "pairwise_iou_rotated", "pairwise_point_box_distance",
        "polygons_to_bitmask", "rotated_boxes",
    ],
    "libdet.layers": [
        "ASPP", "BatchNorm2d", "CNNBlockBase", "Conv2d", "ConvTranspose2d", "CycleBatchNormList", "DeformConv",
        "DepthwiseSeparableConv2d", "FrozenBatchNorm2d", "Linear", "ModulatedDeformConv", "NaiveSyncBatchNorm",
        "ROIAlign", "ROIAlignRotated", "ShapeSpec", "aspp", "batch_norm", "batched_nms", "batched_nms_rotated",
        "blocks", "cat", "ciou_loss", "cross_entropy", "deform_conv", "diou_loss", "empty_input_loss_func_wrapper",
        "get_norm", "interpolate", "losses", "mask_ops", "move_device_like", "nms", "nms_rotated", "nonzero_tuple",
        "paste_masks_in_image", "roi_align", "roi_align_rotated", "shape_spec", "shapes_to_tensor", "wrappers",
    ],
    "libdet.data": [
        "DatasetCatalog", "DatasetFromList", "DatasetMapper", "MapDataset", "Metadata", "MetadataCatalog",
        "ToIterableDataset", "build", "build_batch_data_loader", "build_detection_test_loader",
        "build_detection_train_loader", "catalog", "common", "dataset_mapper", "datasets", "detection_utils",
        "get_detection_dataset_dicts", "load_proposals_into_dataset", "print_instances_class_histogram",
        "samplers", "transforms",
    ],
    "libdet.data.transforms": [
        "AugInput", "Augmentation", "AugmentationList", "BlendTransform", "ColorTransform", "CropTransform",
        "ExtentTransform", "FixedSizeCrop", "GridSampleTransform", "HFlipTransform", "MinIoURandomCrop",
        "NoOpTransform", "PILColorTransform", "PadTransform", "RandomApply", "RandomBrightness",
        "RandomContrast", "RandomCrop", "RandomCrop_CategoryAreaConstraint", "RandomExtent", "RandomFlip",
        "RandomLighting", "RandomResize", "RandomRotation", "RandomSaturation", "Resize", "ResizeScale",
        "ResizeShortestEdge", "ResizeTransform", "RotationTransform", "ScaleTransform", "StandardAugInput",
        "Transform", "TransformGen", "TransformList", "VFlipTransform", "apply_augmentations",
        "apply_transform_gens", "augmentation", "augmentation_impl", "transform",
    ],
    "libdet.data.datasets": [
        "builtin", "builtin_meta", "cityscapes", "coco", "coco_panoptic", "convert_to_coco_json",
        "get_lvis_instances_meta", "load_coco_json", "load_lvis_json", "load_sem_seg", "load_voc_instances",
        "lvis", "pascal_voc", "register_coco_instances", "register_coco_panoptic",
        "register_coco_panoptic_separated", "register_lvis_instances", "register_pascal_voc",
    ],
    "libdet.data.samplers": [
        "GroupedBatchSampler", "InferenceSampler", "RandomSubsetTrainingSampler", "RepeatFactorTrainingSampler",
        "TrainingSampler",
    ],
    "libdet.evaluation": [
        "COCOEvaluator", "COCOPanopticEvaluator", "CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator",
        "DatasetEvaluator", "DatasetEvaluators", "LVISEvaluator", "PascalVOCDetectionEvaluator",
        "RotatedCOCOEvaluator", "SemSegEvaluator", "cityscapes_evaluation", "coco_evaluation", "evaluator",
        "fast_eval_api", "inference_context", "inference_on_dataset", "lvis_evaluation", "panoptic_evaluation",
        "pascal_voc_evaluation", "print_csv_format", "rotated_coco_evaluation", "sem_seg_evaluation", "testing",
        "verify_results",
    ],
    "libdet.utils.visualizer": [
        "ColorMode", "VisImage", "Visualizer",
    ],

    "libdet.modeling": [
        "Backbone", "BaseKeypointRCNNHead", "BaseMaskRCNNHead", "DatasetMapperTTA", "FCOS", "FPN",
        "FastRCNNOutputLayers", "GeneralizedRCNN", "GeneralizedRCNNWithTTA", "PanopticFPN", "ProposalNetwork",
        "ROIHeads", "ResNet", "ResNetBlockBase", "RetinaNet", "SemanticSegmentor", "StandardROIHeads",
        "anchor_generator", "backbone", "box_regression", "detector_postprocess", "make_stage", "matcher",
        "meta_arch", "poolers", "postprocessing", "proposal_generator", "roi_heads", "sampling",
        "test_time_augmentation",
    ],
    "libdet.modeling.backbone": [
        "Backbone", "BasicStem", "BottleneckBlock", "FPN", "RegNet", "ResNet", "ResNetBlockBase", "backbone",
        "fpn", "make_stage", "regnet", "resnet",
    ],
    "libdet.modeling.proposal_generator": [
        "RPN", "StandardRPNHead", "proposal_utils", "rpn", "rrpn",
    ],
    "libdet.modeling.roi_heads": [
        "BaseKeypointRCNNHead", "BaseMaskRCNNHead", "CascadeROIHeads", "FastRCNNConvFCHead",
        "FastRCNNOutputLayers", "KRCNNConvDeconvUpsampleHead", "MaskRCNNConvUpsampleHead", "ROIHeads",
        "RROIHeads", "Res5ROIHeads", "StandardROIHeads", "box_head", "cascade_rcnn", "fast_rcnn",
        "keypoint_head", "mask_head", "roi_heads", "rotated_fast_rcnn", "select_foreground_proposals",
    ],
    "libdet.modeling.meta_arch": [
        "DenseDetector", "FCOS", "GeneralizedRCNN", "PanopticFPN", "ProposalNetwork", "RetinaNet",
        "SemanticSegmentor", "dense_detector", "fcos", "panoptic_fpn", "rcnn", "retinanet", "semantic_seg",
    ],
    "libdet.engine": [
        "AMPTrainer", "DEFAULT_TIMEOUT", "HookBase", "SimpleTrainer", "TrainerBase", "launch", "resolve_device",
        "train_loop",
    ],
    "libdet.engine.launch": ["DEFAULT_TIMEOUT", "DistributedEnv", "launch", "run_in_process_group"],
    "libdet.engine.slurm": [
        "EXECUTORS", "ScriptFunction", "SubmititTrainer", "build_executor", "job_distributed_env", "submit_training",
    ],
    "libdet.solver": [
        "LRMultiplier", "LRScheduler", "WarmupCosineLR", "WarmupMultiStepLR", "WarmupParamScheduler", "build",
        "get_default_optimizer_params", "lr_scheduler",
    ],
    "libdet.checkpoint": ["Checkpointer", "DetectionCheckpointer", "PeriodicCheckpointer"],
    "libdet.model_zoo": ["get", "get_checkpoint_url", "get_config", "get_config_file"],
    "libdet.utils.events": [
        "CommonMetricPrinter", "EventStorage", "JSONWriter", "TensorboardXWriter", "get_event_storage",
        "has_event_storage",
    ],
    "libdet.utils.comm": [
        "all_gather", "create_local_process_group", "gather", "get_local_process_group", "get_local_rank",
        "get_local_size", "get_rank", "get_world_size", "is_main_process", "reduce_dict", "shared_random_seed",
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
