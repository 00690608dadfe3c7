"""COCO panoptic segmentation: the standard format (PNG + ``segments_info``) and detectron2's "separated" form.

Category lists are taken from the panoptic json's own ``categories`` when the dataset is loaded (COCO
panoptic has 133), unless the metadata passed at registration already has them. As in detectron2:

* standard (``register_coco_panoptic``): ``stuff_classes`` lists *all* categories (things too, so the
  semantic-segmentation evaluator can be used), ``thing_classes`` the things; both id maps point into the
  full list (``thing_dataset_id_to_contiguous_id`` values are indices among all categories);
* separated (``register_coco_panoptic_separated``, for PanopticFPN): instances from the instances json
  (``thing_classes`` 0..79) merged with semantic PNGs in which 0 is "things" and stuff categories are 1..S
  (``stuff_classes = ["things", <stuff names>]``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from libdet.utils.file_io import PathManager

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json, load_sem_seg

__all__ = [
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "panoptic_metadata_from_categories",
    "separated_stuff_metadata_from_categories",
    "merge_to_panoptic",
]

logger = logging.getLogger(__name__)


def _read_categories(json_file: str) -> list[dict]:
    if not PathManager.exists(json_file):
        raise FileNotFoundError(f"Panoptic annotation file {json_file!r} does not exist.")
    with PathManager.open(json_file) as f:
        data = json.load(f)
    if "categories" not in data:
        raise ValueError(f"Panoptic json {json_file!r} has no 'categories'.")
    return data["categories"]


def panoptic_metadata_from_categories(categories: list[dict]) -> dict[str, Any]:
    """Standard panoptic metadata (see the module docstring) from json ``categories`` (sorted by id)."""
    cats = sorted(categories, key=lambda c: c["id"])
    meta: dict[str, Any] = {
        "thing_classes": [c["name"] for c in cats if c.get("isthing", 0)],
        "stuff_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c.get("isthing", 0)},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    if cats and all("color" in c for c in cats):
        meta["thing_colors"] = [list(c["color"]) for c in cats if c.get("isthing", 0)]
        meta["stuff_colors"] = [list(c["color"]) for c in cats]
    return meta


def separated_stuff_metadata_from_categories(categories: list[dict]) -> dict[str, Any]:
    """Stuff metadata of the separated format: 0 = "things", stuff categories 1..S in id order."""
    stuff = sorted((c for c in categories if not c.get("isthing", 0)), key=lambda c: c["id"])
    meta: dict[str, Any] = {
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i + 1 for i, c in enumerate(stuff)},
    }
    if stuff and all("color" in c for c in stuff):
        meta["stuff_colors"] = [[82, 18, 128]] + [list(c["color"]) for c in stuff]
    return meta


def load_coco_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, meta: dict[str, Any] | None = None
) -> list[dict]:
    """Load COCO panoptic annotations.

    Args:
        json_file: the panoptic json (``panoptic_{train,val}2017.json``).
        image_dir: folder of the images (``<file_name without .png>.jpg``).
        gt_dir: folder of the panoptic PNGs.
        meta: holds ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id``; default
            :func:`panoptic_metadata_from_categories` of the json.

    Returns:
        One dict per image: ``file_name``, ``image_id``, ``pan_seg_file_name`` and ``segments_info`` (each
        segment's ``category_id`` made contiguous and ``isthing`` added).
    """
    if not PathManager.exists(json_file):
        raise FileNotFoundError(f"Panoptic annotation file {json_file!r} does not exist.")
    with PathManager.open(json_file) as f:
        data = json.load(f)
    if meta is None:
        meta = panoptic_metadata_from_categories(data.get("categories", []))
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    dicts = []
    for ann in data.get("annotations", []):
        segments = []
        for seg in ann["segments_info"]:
            cid = seg["category_id"]
            if cid in thing_map:
                segments.append({**seg, "category_id": thing_map[cid], "isthing": True})
            elif cid in stuff_map:
                segments.append({**seg, "category_id": stuff_map[cid], "isthing": False})
            else:
                raise ValueError(
                    f"Segment {seg.get('id')!r} of image {ann['image_id']!r} in {json_file!r} has category_id "
                    f"{cid!r}, which is not in the dataset's categories."
                )
        dicts.append(
            {
                "file_name": os.path.join(image_dir, os.path.splitext(ann["file_name"])[0] + ".jpg"),
                "image_id": ann["image_id"],
                "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
                "segments_info": segments,
            }
        )
    if not dicts:
        raise ValueError(f"No panoptic annotations found in {json_file!r}.")
    for key in ("file_name", "pan_seg_file_name"):
        if not PathManager.isfile(dicts[0][key]):
            raise FileNotFoundError(f"{dicts[0][key]!r} (image {dicts[0]['image_id']!r} of {json_file!r}) is missing.")
    logger.info(f"Loaded {len(dicts)} images with panoptic annotations from {json_file}")
    return dicts


def register_coco_panoptic(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
) -> None:
    """Register the standard panoptic dataset ``name`` (``evaluator_type="coco_panoptic_seg"``).

    Category metadata missing from ``metadata`` is set from the panoptic json when the dataset is loaded.
    """

    def load() -> list[dict]:
        md = MetadataCatalog.get(name)
        if md.get("stuff_dataset_id_to_contiguous_id") is None:
            md.set(**panoptic_metadata_from_categories(_read_categories(panoptic_json)))
        return load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, md.as_dict())

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **metadata,
    )


def merge_to_panoptic(detection_dicts: list[dict], sem_seg_dicts: list[dict]) -> list[dict]:
    """Merge instance dicts and semantic dicts of the same images (matched by ``file_name``).

    Raises:
        ValueError: an instance image has no semantic-segmentation entry (names the file).
    """
    by_file = {d["file_name"]: d for d in sem_seg_dicts}
    merged = []
    for det in detection_dicts:
        if det["file_name"] not in by_file:
            raise ValueError(f"merge_to_panoptic: image {det['file_name']!r} has no semantic-segmentation file.")
        merged.append({**det, **by_file[det["file_name"]]})
    return merged


def register_coco_panoptic_separated(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
) -> None:
    """Register ``<name>_separated`` (instances + stuff PNGs, for PanopticFPN) and ``<name>_stuffonly``.

    Args:
        name: base name, e.g. ``"coco_2017_train_panoptic"``.
        metadata: extra metadata (e.g. thing classes/colours).
        image_root: folder of the images.
        panoptic_root, panoptic_json: panoptic PNGs and json (used by the panoptic evaluator and for the
            stuff category names).
        sem_seg_root: semantic PNGs with 0 = things, 1..S = stuff, 255 = ignore.
        instances_json: COCO instances json of the same images.
    """
    panoptic_name = name + "_separated"

    def load() -> list[dict]:
        md = MetadataCatalog.get(panoptic_name)
        if md.get("stuff_classes") is None:
            md.set(**separated_stuff_metadata_from_categories(_read_categories(panoptic_json)))
        return merge_to_panoptic(
            load_coco_json(instances_json, image_root, panoptic_name), load_sem_seg(sem_seg_root, image_root)
        )

    DatasetCatalog.register(panoptic_name, load)
    MetadataCatalog.get(panoptic_name).set(
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        **metadata,
    )

    stuff_name = name + "_stuffonly"

    def load_stuff() -> list[dict]:
        md = MetadataCatalog.get(stuff_name)
        if md.get("stuff_classes") is None:
            md.set(**separated_stuff_metadata_from_categories(_read_categories(panoptic_json)))
        return load_sem_seg(sem_seg_root, image_root)

    DatasetCatalog.register(stuff_name, load_stuff)
    MetadataCatalog.get(stuff_name).set(
        sem_seg_root=sem_seg_root, image_root=image_root, evaluator_type="sem_seg", ignore_label=255, **metadata
    )
