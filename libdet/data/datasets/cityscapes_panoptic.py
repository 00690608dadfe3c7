"""Cityscapes panoptic segmentation in the COCO panoptic format made by ``cityscapesscripts``.

``cityscapesscripts/preparation/createPanopticImgs.py`` writes ``gtFine/cityscapes_panoptic_<split>.json`` and
the PNGs ``gtFine/cityscapes_panoptic_<split>/<stem>_gtFine_panoptic.png`` (segment id = ``R + 256 G + 256^2 B``);
``createTrainIdLabelImgs.py`` writes the semantic labels ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``.

Categories are Cityscapes' 19 evaluation classes; a segment's contiguous id is the class's train id, for things
and stuff alike (``thing_*`` and ``stuff_*`` metadata both list all 19, as detectron2 does, so the visualizer
can draw either).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from libdet.utils.file_io import PathManager

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import CITYSCAPES_STUFF_CLASSES, CITYSCAPES_STUFF_COLORS, CITYSCAPES_THING_CLASSES

__all__ = [
    "CITYSCAPES_PANOPTIC_SPLITS",
    "get_cityscapes_panoptic_files",
    "get_cityscapes_panoptic_meta",
    "load_cityscapes_panoptic",
    "register_all_cityscapes_panoptic",
]

logger = logging.getLogger(__name__)

# Cityscapes label ids of the 19 evaluation classes, in train-id order (road = 7 has train id 0, ...).
_CITYSCAPES_EVAL_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

#: dataset name -> (image dir, panoptic PNG dir, panoptic json), relative to the datasets root.
CITYSCAPES_PANOPTIC_SPLITS = {
    "cityscapes_fine_panoptic_train": (
        "cityscapes/leftImg8bit/train",
        "cityscapes/gtFine/cityscapes_panoptic_train",
        "cityscapes/gtFine/cityscapes_panoptic_train.json",
    ),
    "cityscapes_fine_panoptic_val": (
        "cityscapes/leftImg8bit/val",
        "cityscapes/gtFine/cityscapes_panoptic_val",
        "cityscapes/gtFine/cityscapes_panoptic_val.json",
    ),
}


def get_cityscapes_panoptic_meta() -> dict[str, Any]:
    """Metadata of the Cityscapes panoptic datasets: classes and colours (both as ``thing_*`` and ``stuff_*``),
    and the maps from Cityscapes label ids to contiguous ids (train ids) for thing and stuff classes."""
    classes = list(CITYSCAPES_STUFF_CLASSES)
    colors = [list(c) for c in CITYSCAPES_STUFF_COLORS]
    things, stuff = {}, {}
    for train_id, (label_id, name) in enumerate(zip(_CITYSCAPES_EVAL_LABEL_IDS, classes, strict=True)):
        (things if name in CITYSCAPES_THING_CLASSES else stuff)[label_id] = train_id
    return {
        "thing_classes": classes,
        "thing_colors": colors,
        "stuff_classes": list(classes),
        "stuff_colors": [list(c) for c in colors],
        "thing_dataset_id_to_contiguous_id": things,
        "stuff_dataset_id_to_contiguous_id": stuff,
    }


def get_cityscapes_panoptic_files(image_dir: str, gt_dir: str, json_info: dict) -> list[tuple[str, str, list]]:
    """``(image file, panoptic PNG, segments_info)`` for every annotation of the panoptic json.

    Raises:
        FileNotFoundError: ``image_dir`` holds no ``*_leftImg8bit.png``, or an annotation's image is missing
            (names the annotation).
    """
    suffix = "_leftImg8bit.png"
    images: dict[str, str] = {}
    for city in sorted(PathManager.ls(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not PathManager.isdir(city_dir):
            continue
        for basename in PathManager.ls(city_dir):
            if basename.endswith(suffix):
                images[basename[: -len(suffix)]] = os.path.join(city_dir, basename)
    logger.info("%d images found in %s.", len(images), image_dir)
    if not images:
        raise FileNotFoundError(f"No '*{suffix}' images found under {image_dir!r}.")
    files = []
    for ann in json_info["annotations"]:
        image_file = images.get(ann["image_id"])
        if image_file is None:
            raise FileNotFoundError(
                f"Cityscapes panoptic annotation {ann['file_name']!r}: its image '{ann['image_id']}{suffix}' is not "
                f"under {image_dir!r}."
            )
        files.append((image_file, os.path.join(gt_dir, ann["file_name"]), ann["segments_info"]))
    return files


def _semantic_file(image_file: str) -> str:
    """``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` -> ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``."""
    return os.path.splitext(image_file.replace("leftImg8bit", "gtFine"))[0] + "_labelTrainIds.png"


def load_cityscapes_panoptic(image_dir: str, gt_dir: str, gt_json: str, meta: dict[str, Any]) -> list[dict]:
    """Load Cityscapes panoptic annotations as libdet dataset dicts.

    Args:
        image_dir: e.g. ``<root>/cityscapes/leftImg8bit/train``.
        gt_dir: the panoptic PNGs, e.g. ``<root>/cityscapes/gtFine/cityscapes_panoptic_train``.
        gt_json: the panoptic json, e.g. ``<root>/cityscapes/gtFine/cityscapes_panoptic_train.json``.
        meta: with ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id``
            (:func:`get_cityscapes_panoptic_meta`).

    Returns:
        one dict per image: ``file_name``, ``image_id`` (``<city>_<seq>_<frame>``), ``sem_seg_file_name``,
        ``pan_seg_file_name`` and ``segments_info`` (``category_id`` made contiguous).

    Raises:
        FileNotFoundError: the json, an image, or the first image's label files are missing (with the
            ``cityscapesscripts`` command that creates them).
        ValueError: a segment of a category outside the 19 evaluation classes (names the json and image).
    """
    if not PathManager.isfile(gt_json):
        raise FileNotFoundError(
            f"Cityscapes panoptic json {gt_json!r} not found; create it with "
            "`python cityscapesscripts/preparation/createPanopticImgs.py`."
        )
    with PathManager.open(gt_json) as f:
        json_info = json.load(f)
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = meta["stuff_dataset_id_to_contiguous_id"]
    dataset = []
    for image_file, label_file, segments_info in get_cityscapes_panoptic_files(image_dir, gt_dir, json_info):
        segments = []
        for segment in segments_info:
            category = segment["category_id"]
            if category not in things and category not in stuff:
                raise ValueError(
                    f"{gt_json!r}, image {os.path.basename(image_file)!r}: segment {segment.get('id')} has "
                    f"category {category}, which is not one of the 19 Cityscapes evaluation classes."
                )
            segments.append({**segment, "category_id": things.get(category, stuff.get(category))})
        stem = os.path.splitext(os.path.basename(image_file))[0]
        dataset.append(
            {
                "file_name": image_file,
                "image_id": "_".join(stem.split("_")[:3]),
                "sem_seg_file_name": _semantic_file(image_file),
                "pan_seg_file_name": label_file,
                "segments_info": segments,
            }
        )
    if not dataset:
        raise FileNotFoundError(f"{gt_json!r} has no annotations.")
    if not PathManager.isfile(dataset[0]["sem_seg_file_name"]):
        raise FileNotFoundError(
            f"{dataset[0]['sem_seg_file_name']!r} not found; create the train-id labels with "
            "`python cityscapesscripts/preparation/createTrainIdLabelImgs.py`."
        )
    if not PathManager.isfile(dataset[0]["pan_seg_file_name"]):
        raise FileNotFoundError(
            f"{dataset[0]['pan_seg_file_name']!r} not found; create the panoptic PNGs with "
            "`python cityscapesscripts/preparation/createPanopticImgs.py`."
        )
    return dataset


def register_all_cityscapes_panoptic(root: str) -> None:
    """Register ``cityscapes_fine_panoptic_{train,val}`` under the datasets ``root`` (reads no file)."""
    meta = get_cityscapes_panoptic_meta()
    for name, (image_rel, gt_rel, json_rel) in CITYSCAPES_PANOPTIC_SPLITS.items():
        image_dir, gt_dir, gt_json = (os.path.join(root, p) for p in (image_rel, gt_rel, json_rel))

        def load(image_dir=image_dir, gt_dir=gt_dir, gt_json=gt_json) -> list[dict]:
            return load_cityscapes_panoptic(image_dir, gt_dir, gt_json, meta)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            panoptic_root=gt_dir,
            image_root=image_dir,
            panoptic_json=gt_json,
            gt_dir=gt_dir.replace("cityscapes_panoptic_", ""),
            evaluator_type="cityscapes_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **meta,
        )
