"""libdet.data keeps detectron2's public names (d2_public_api.md) for the modules owned here."""

import importlib

import pytest

D2_NAMES = {
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
    "libdet.data.samplers": [
        "GroupedBatchSampler",
        "InferenceSampler",
        "RandomSubsetTrainingSampler",
        "RepeatFactorTrainingSampler",
        "TrainingSampler",
    ],
}


@pytest.mark.parametrize("module_name", sorted(D2_NAMES))
def test_public_names(module_name):
    module = importlib.import_module(module_name)
    missing = [n for n in D2_NAMES[module_name] if not hasattr(module, n)]
    assert not missing, f"{module_name} lacks {missing}"
    import types

    assert isinstance(module.build if module_name == "libdet.data" else module, types.ModuleType)
