"""Pascal VOC detection annotations (``VOCdevkit/VOC20xx`` folder layout)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from libdet.structures import BoxMode
from libdet.utils.file_io import PathManager

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import PASCAL_VOC_CLASSES

__all__ = ["load_voc_instances", "register_pascal_voc", "CLASS_NAMES"]

#: The 20 VOC classes (same as ``builtin_meta.PASCAL_VOC_CLASSES``).
CLASS_NAMES = PASCAL_VOC_CLASSES


def _parse_voc_xml(anno_file: str, class_names: Sequence[str]) -> tuple[int, int, list[dict]]:
    with PathManager.open(anno_file) as f:
        try:
            tree = ET.parse(f)
        except ET.ParseError as e:
            raise ValueError(f"Cannot parse VOC annotation {anno_file!r}: {e}") from e
    size = tree.find("size")
    if size is None:
        raise ValueError(f"VOC annotation {anno_file!r} has no <size> element.")
    height, width = int(size.findtext("height")), int(size.findtext("width"))
    instances = []
    for obj in tree.findall("object"):
        cls = (obj.findtext("name") or "").strip()
        if cls not in class_names:
            raise ValueError(f"VOC annotation {anno_file!r} has an object of unknown class {cls!r}.")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"An object of class {cls!r} in {anno_file!r} has no <bndbox>.")
        bbox = [float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        # VOC pixel indices are 1-based: the top-left corner of pixel (1, 1) is (0, 0) in libdet coordinates.
        # As detectron2, only x1/y1 are shifted, so (x2 - x1) includes both end pixels.
        bbox[0] -= 1.0
        bbox[1] -= 1.0
        # "difficult" objects are kept for training (the VOC evaluator ignores them when scoring).
        instances.append({"category_id": class_names.index(cls), "bbox": bbox, "bbox_mode": BoxMode.XYXY_ABS})
    return height, width, instances


def load_voc_instances(dirname: str, split: str, class_names: Sequence[str] | None = None) -> list[dict]:
    """Load Pascal VOC detection annotations.

    Args:
        dirname: a ``VOC2007``-style folder containing ``Annotations/``, ``ImageSets/Main/`` and ``JPEGImages/``.
        split: one of the files in ``ImageSets/Main`` without ``.txt``, e.g. ``"train"``, ``"test"``.
        class_names: class names in contiguous-id order (default: the 20 VOC classes).

    Returns:
        One dict per image listed in the split: ``file_name``, ``image_id`` (the VOC file id), ``height``,
        ``width`` and ``annotations`` with ``bbox`` in ``XYXY_ABS`` (x1, y1 shifted by -1, see above).
    """
    class_names = list(class_names if class_names is not None else CLASS_NAMES)
    split_file = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    if not PathManager.exists(split_file):
        raise FileNotFoundError(f"VOC split file {split_file!r} does not exist.")
    with PathManager.open(split_file) as f:
        fileids = [line.strip() for line in f if line.strip()]
    dicts = []
    for fileid in fileids:
        anno_file = os.path.join(dirname, "Annotations", fileid + ".xml")
        if not PathManager.exists(anno_file):
            raise FileNotFoundError(f"VOC annotation {anno_file!r} (listed in {split_file!r}) does not exist.")
        height, width, instances = _parse_voc_xml(anno_file, class_names)
        dicts.append(
            {
                "file_name": os.path.join(dirname, "JPEGImages", fileid + ".jpg"),
                "image_id": fileid,
                "height": height,
                "width": width,
                "annotations": instances,
            }
        )
    return dicts


def register_pascal_voc(
    name: str, dirname: str, split: str, year: int, class_names: Sequence[str] | None = None
) -> None:
    """Register a VOC split under ``name`` with metadata ``thing_classes``, ``dirname``, ``year``, ``split``
    and ``evaluator_type="pascal_voc"`` (nothing is read until the dataset is used)."""
    class_names = list(class_names if class_names is not None else CLASS_NAMES)
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
    MetadataCatalog.get(name).set(
        thing_classes=class_names, dirname=dirname, year=year, split=split, evaluator_type="pascal_voc"
    )
