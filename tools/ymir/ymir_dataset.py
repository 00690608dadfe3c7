"""YMIR index files and detection annotations, read into libdet dataset dicts and registered as datasets.

An index file has one ``image_path<TAB>annotation_path`` line per asset (candidates for mining/infer may have
no annotation path). A detection annotation file has one ``class_id,x1,y1,x2,y2[,quality]`` line per box, with
``class_id`` 0-based into ``class_names``; libdet's contiguous category ids are the same numbers, so the class of
a prediction is ``class_names[pred_class]`` with no shift.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from ymir_protocol import ReturnCode, YmirError

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets import convert_to_coco_json
from libdet.structures import BoxMode

__all__ = ["IndexEntry", "load_ymir_detections", "read_index", "register_ymir_dataset"]


@dataclass(frozen=True)
class IndexEntry:
    image: str
    annotation: str  # "" when the asset has none


def read_index(path: str, *, need_annotations: bool) -> list[IndexEntry]:
    """Entries of an index file; errors name the file and line (:attr:`ReturnCode.DATASET`)."""
    if not path:
        raise YmirError(ReturnCode.DATASET, "The env file names no index file for this task.")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise YmirError(ReturnCode.DATASET, f"Cannot read the index file {path}: {e.strerror}.") from e
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) > 2 or (need_annotations and (len(parts) < 2 or not parts[1])):
            expected = "image_path<TAB>annotation_path" if need_annotations else "image_path[<TAB>annotation_path]"
            raise YmirError(ReturnCode.DATASET, f"{path}:{number}: expected '{expected}', got {line!r}.")
        entries.append(IndexEntry(parts[0], parts[1] if len(parts) == 2 else ""))
    if not entries:
        raise YmirError(ReturnCode.DATASET, f"The index file {path} lists no assets.")
    return entries


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` from the image header; an unreadable image is :attr:`ReturnCode.IMAGE`."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError) as e:
        raise YmirError(ReturnCode.IMAGE, f"Cannot read the image {path}: {e}") from e
    return height, width


def _read_annotation(path: str, num_classes: int, height: int, width: int) -> list[dict]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise YmirError(ReturnCode.DATASET, f"Cannot read the annotation file {path}: {e.strerror}.") from e
    annotations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [p.strip() for p in line.split(",")]
        try:
            if len(fields) not in (5, 6):
                raise ValueError("expected 'class_id,x1,y1,x2,y2[,quality]'")
            class_id = int(fields[0])
            x1, y1, x2, y2 = (float(v) for v in fields[1:5])
        except ValueError as e:
            raise YmirError(ReturnCode.DATASET, f"{path}:{number}: {e}; got {line!r}.") from e
        if not 0 <= class_id < num_classes:
            raise YmirError(
                ReturnCode.DATASET,
                f"{path}:{number}: class id {class_id} is outside the {num_classes} class_names (0..{num_classes - 1}).",
            )
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise YmirError(ReturnCode.DATASET, f"{path}:{number}: invalid box ({x1}, {y1}, {x2}, {y2}).")
        # Boxes a pixel outside the image are common in exported labels; clip them rather than fail.
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        annotations.append({"bbox": [x1, y1, x2, y2], "bbox_mode": BoxMode.XYXY_ABS, "category_id": class_id})
    return annotations


def load_ymir_detections(index_file: str, class_names: list[str], *, need_annotations: bool = True) -> list[dict]:
    """libdet dataset dicts (``file_name``, ``height``, ``width``, ``image_id``, ``annotations``) of an index."""
    dicts = []
    for image_id, entry in enumerate(read_index(index_file, need_annotations=need_annotations)):
        height, width = image_size(entry.image)
        record = {"file_name": entry.image, "height": height, "width": width, "image_id": image_id}
        if entry.annotation:
            record["annotations"] = _read_annotation(entry.annotation, len(class_names), height, width)
        dicts.append(record)
    return dicts


def register_ymir_dataset(name: str, index_file: str, class_names: list[str], coco_json: str) -> list[dict]:
    """Read an annotated index, register it as dataset ``name`` and write its COCO json (for COCO evaluation) to
    ``coco_json``; returns its dicts.

    The dicts are read once here, so that every error surfaces before training starts.
    """
    dicts = load_ymir_detections(index_file, class_names)
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(thing_classes=list(class_names), evaluator_type="coco", ymir_index=index_file)
    convert_to_coco_json(name, coco_json, allow_cached=False)
    MetadataCatalog.get(name).set(json_file=coco_json)
    return dicts


def asset_name(path: str) -> str:
    return os.path.basename(path)
