"""LVIS-format annotations (v0.5, v1 and COCO-fied LVIS).

LVIS has 1203 (v1) / 1230 (v0.5) categories. Their names and per-category image counts are read from the
annotation json itself (:func:`lvis_categories_from_json`), never from a list in the code, and put into the
dataset's metadata when it is loaded:

* ``thing_classes``: category ``name`` ordered by category id;
* ``thing_dataset_id_to_contiguous_id``: json id -> 0..K-1 (id - 1 for the official files);
* ``class_image_count``: ``[{"id", "image_count"}, ...]`` as in the json (training files only), used for
  repeat-factor sampling and federated-loss weights;
* ``category_frequency``: ``{"r"|"c"|"f"}`` per contiguous id when the json has ``frequency``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..catalog import DatasetCatalog, MetadataCatalog
from ..validation import AnnotationValidator
from .builtin_meta import get_builtin_metadata
from .coco import _category_mapping, _convert_annotation, _index_annotations, _read_json

__all__ = ["load_lvis_json", "register_lvis_instances", "get_lvis_instances_meta", "lvis_categories_from_json"]

logger = logging.getLogger(__name__)


def _categories_meta(categories: list[dict], json_file: str) -> dict[str, Any]:
    id_map, names = _category_mapping(categories, json_file)
    meta: dict[str, Any] = {"thing_classes": names, "thing_dataset_id_to_contiguous_id": id_map}
    cats = sorted(categories, key=lambda c: c["id"])
    if cats and all("image_count" in c for c in cats):
        meta["class_image_count"] = [{"id": c["id"], "image_count": c["image_count"]} for c in cats]
    if cats and all("frequency" in c for c in cats):
        meta["category_frequency"] = [c["frequency"] for c in cats]
    return meta


def lvis_categories_from_json(json_file: str) -> dict[str, Any]:
    """Metadata derived from the ``categories`` of an LVIS json (see the module docstring)."""
    data = _read_json(json_file)
    if "categories" not in data:
        raise ValueError(f"LVIS json {json_file!r} has no 'categories'.")
    return _categories_meta(data["categories"], json_file)


def _lvis_file_name(image_root: str, img: dict, json_file: str) -> str:
    if "file_name" in img:
        name = img["file_name"]
        if name.startswith("COCO"):
            # v0.5 uses COCO-2014 names (COCO_train2014_000000000139.jpg); the images are COCO 2017's.
            name = name[-16:]
        return os.path.join(image_root, name)
    if "coco_url" in img:
        # v1: 'http://images.cocodataset.org/train2017/000000155379.jpg' -> <image_root>/train2017/000000155379.jpg
        split_folder, name = img["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split_folder, name)
    raise ValueError(f"Image {img.get('id')!r} in {json_file!r} has neither 'file_name' nor 'coco_url'.")


def load_lvis_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
) -> list[dict]:
    """Load an LVIS-format json into libdet dataset dicts.

    Args:
        json_file: the LVIS json.
        image_root: folder of the COCO images (v1: the folder holding ``train2017/`` and ``val2017/``).
        dataset_name: when given, the category metadata is set in ``MetadataCatalog.get(dataset_name)``.
        extra_annotation_keys: annotation fields to copy besides bbox, category_id and segmentation.

    Returns:
        One dict per image with ``file_name``, ``height``, ``width``, ``image_id``,
        ``not_exhaustive_category_ids`` and ``neg_category_ids`` (both as contiguous ids) and ``annotations``
        (``bbox`` in ``XYWH_ABS``, contiguous ``category_id``, polygon ``segmentation``). Errors and filters
        are those of :func:`libdet.data.datasets.load_coco_json`.
    """
    data = _read_json(json_file)
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"{json_file!r} is not an LVIS json: it needs 'images' and 'categories'.")
    meta = _categories_meta(data["categories"], json_file)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(**meta)
    per_image = _index_annotations(data, json_file)
    ann_keys = ["bbox", "category_id"] + list(extra_annotation_keys or [])
    validator = AnnotationValidator(json_file, num_classes=len(id_map))
    dicts = []
    for img in data["images"]:
        record = {
            "file_name": _lvis_file_name(image_root, img, json_file),
            "height": img.get("height"),
            "width": img.get("width"),
            "image_id": img["id"],
            "not_exhaustive_category_ids": [id_map[c] for c in img.get("not_exhaustive_category_ids", [])],
            "neg_category_ids": [id_map[c] for c in img.get("neg_category_ids", [])],
        }
        objs = []
        for anno in per_image[img["id"]]:
            obj = _convert_annotation(anno, record, id_map, ann_keys, validator)
            if obj is not None:
                obj.pop("iscrowd", None)  # LVIS has no crowd annotations
                objs.append(obj)
        record["annotations"] = objs
        dicts.append(record)
    logger.info(f"Loaded {len(dicts)} images in LVIS format from {json_file}")
    validator.log_summary(logger)
    return dicts


def get_lvis_instances_meta(dataset_name: str) -> dict[str, Any]:
    """Category metadata of an LVIS dataset.

    COCO-fied LVIS (a name containing ``"cocofied"``) has COCO's 80 classes. Otherwise the metadata is read
    from the categories of the json registered for ``dataset_name`` (``MetadataCatalog`` key ``json_file``).
    """
    if "cocofied" in dataset_name:
        return get_builtin_metadata("coco")
    json_file = MetadataCatalog.get(dataset_name).get("json_file")
    if json_file is None:
        raise KeyError(
            f"get_lvis_instances_meta: dataset {dataset_name!r} has no 'json_file' in its metadata; register it "
            "with register_lvis_instances first."
        )
    return lvis_categories_from_json(json_file)


def register_lvis_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register an LVIS-format dataset under ``name`` (``evaluator_type="lvis"``; read only when used)."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_lvis_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis", **metadata)
