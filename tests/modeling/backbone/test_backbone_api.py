import importlib

import pytest

# detectron2's public names of these modules that libdet implements (ViT / MViT / Swin backbones and the
# yacs-only registries / build_* functions are not part of libdet.modeling.backbone yet).
_NAMES = {
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
    "libdet.modeling.backbone.resnet": [
        "BasicBlock",
        "BasicStem",
        "BottleneckBlock",
        "DeformBottleneckBlock",
        "ResNet",
        "ResNetBlockBase",
        "make_stage",
    ],
    "libdet.modeling.backbone.fpn": ["FPN", "LastLevelMaxPool", "LastLevelP6P7"],
    "libdet.modeling.backbone.regnet": [
        "AnyNet",
        "RegNet",
        "ResBottleneckBlock",
        "ResBasicBlock",
        "ResStem",
        "SimpleStem",
        "VanillaBlock",
        "generate_regnet_parameters",
    ],
    "libdet.modeling.anchor_generator": ["DefaultAnchorGenerator", "RotatedAnchorGenerator", "BufferList"],
    "libdet.modeling.box_regression": ["Box2BoxTransform", "Box2BoxTransformRotated", "Box2BoxTransformLinear"],
    "libdet.modeling.matcher": ["Matcher"],
    "libdet.modeling.sampling": ["subsample_labels"],
    "libdet.modeling.poolers": ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"],
    "libdet.modeling.postprocessing": ["detector_postprocess", "sem_seg_postprocess"],
}


@pytest.mark.parametrize("module_name", sorted(_NAMES))
def test_detectron2_names_exist(module_name):
    module = importlib.import_module(module_name)
    missing = [n for n in _NAMES[module_name] if not hasattr(module, n)]
    assert not missing, f"{module_name} lacks {missing}"
