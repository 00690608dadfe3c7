"""Dataset loaders and the built-in dataset registrations (importing this registers them; no file is read).

Names follow ``detectron2.data.datasets``. The LVIS category tables (``lvis_v1_categories``,
``lvis_v1_category_image_count``, ``lvis_v0_5_categories``) are read from the annotation jsons under the
datasets root on first access, not stored in the code (see also ``lvis.lvis_categories_from_json``).
"""

# Importing ``builtin`` registers the built-in datasets (no I/O).
from . import (
    builtin,
    builtin_meta,
    cityscapes,
    cityscapes_panoptic,
    coco,
    coco_panoptic,
    lvis,
    lvis_v0_5_categories,
    lvis_v1_categories,
    lvis_v1_category_image_count,
    pascal_voc,
    shapes,
    specs,
)
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .coco import convert_to_coco_dict, convert_to_coco_json, load_coco_json, load_sem_seg, register_coco_instances
from .coco_panoptic import load_coco_panoptic_json, register_coco_panoptic, register_coco_panoptic_separated
from .lvis import get_lvis_instances_meta, load_lvis_json, register_lvis_instances
from .pascal_voc import load_voc_instances, register_pascal_voc
from .shapes import generate_shapes_dataset, prepare_shapes_dataset
from .specs import load_yolo_instances, parse_dataset_spec

__all__ = [
    "builtin",
    "builtin_meta",
    "cityscapes",
    "cityscapes_panoptic",
    "coco",
    "coco_panoptic",
    "lvis",
    "lvis_v0_5_categories",
    "lvis_v1_categories",
    "lvis_v1_category_image_count",
    "pascal_voc",
    "shapes",
    "specs",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "generate_shapes_dataset",
    "get_lvis_instances_meta",
    "load_cityscapes_instances",
    "load_cityscapes_semantic",
    "load_coco_json",
    "load_coco_panoptic_json",
    "load_lvis_json",
    "load_sem_seg",
    "load_voc_instances",
    "load_yolo_instances",
    "parse_dataset_spec",
    "prepare_shapes_dataset",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "register_lvis_instances",
    "register_pascal_voc",
]
