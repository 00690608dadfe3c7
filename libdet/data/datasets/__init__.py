"""Dataset loaders and the built-in dataset registrations (importing this registers them; no file is read).

Names follow ``detectron2.data.datasets``. Not provided: ``lvis_v0_5_categories``, ``lvis_v1_categories`` and
``lvis_v1_category_image_count`` (static LVIS category tables); LVIS category names and image counts are
read from the annotation json instead (``lvis.lvis_categories_from_json``). ``cityscapes_panoptic`` is not
implemented yet.
"""

# Importing ``builtin`` registers the built-in datasets (no I/O).
from . import builtin, builtin_meta, cityscapes, coco, coco_panoptic, lvis, pascal_voc, shapes
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .coco import convert_to_coco_dict, convert_to_coco_json, load_coco_json, load_sem_seg, register_coco_instances
from .coco_panoptic import load_coco_panoptic_json, register_coco_panoptic, register_coco_panoptic_separated
from .lvis import get_lvis_instances_meta, load_lvis_json, register_lvis_instances
from .pascal_voc import load_voc_instances, register_pascal_voc
from .shapes import generate_shapes_dataset, prepare_shapes_dataset

__all__ = [
    "builtin",
    "builtin_meta",
    "cityscapes",
    "coco",
    "coco_panoptic",
    "lvis",
    "pascal_voc",
    "shapes",
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
    "prepare_shapes_dataset",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "register_lvis_instances",
    "register_pascal_voc",
]
