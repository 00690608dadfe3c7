"""The package exports detectron2's public names and stays below ``libdet.layers`` in the import graph."""

import ast
import types
from pathlib import Path

import libdet.structures as structures

D2_PUBLIC_NAMES = [
    "BitMasks", "BoxMode", "Boxes", "ImageList", "Instances", "Keypoints", "PolygonMasks", "ROIMasks",
    "RotatedBoxes", "boxes", "heatmaps_to_keypoints", "image_list", "instances", "keypoints", "masks",
    "pairwise_ioa", "pairwise_iou", "pairwise_iou_rotated", "pairwise_point_box_distance",
    "polygons_to_bitmask", "rotated_boxes",
]  # fmt: skip


def test_exports_detectron2_public_names():
    missing = [name for name in D2_PUBLIC_NAMES if not hasattr(structures, name)]
    assert missing == []
    assert sorted(structures.__all__) == sorted(D2_PUBLIC_NAMES)
    for module in ("boxes", "image_list", "instances", "keypoints", "masks", "rotated_boxes"):
        assert isinstance(getattr(structures, module), types.ModuleType)
    # The package-level pairwise_iou is the axis-aligned one; the rotated one is pairwise_iou_rotated.
    assert structures.pairwise_iou is structures.boxes.pairwise_iou
    assert structures.pairwise_iou_rotated is structures.rotated_boxes.pairwise_iou


def test_no_module_level_import_of_other_libdet_packages():
    # structures is the bottom of the import graph: layers etc. may only be imported inside functions.
    package_dir = Path(structures.__file__).parent
    offenders = []
    for path in sorted(package_dir.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("libdet"):
                offenders.append(f"{path.name}: from {node.module}")
            if isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("libdet")]
    assert offenders == []
