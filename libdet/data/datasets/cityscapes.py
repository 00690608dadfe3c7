"""Cityscapes fine annotations: instance segmentation and semantic segmentation.

Folder layout: ``<image_dir>/<city>/<stem>_leftImg8bit.png`` and ``<gt_dir>/<city>/<stem>_gtFine_*``.

The instance loader needs Cityscapes' label table from the optional ``cityscapesscripts`` package
(``pip install libdet[cityscapes]``); with ``from_json=True`` it also needs ``shapely`` to resolve overlaps
between polygons. The semantic loader needs neither: it reads ``*_gtFine_labelTrainIds.png``, which
``cityscapesscripts/preparation/createTrainIdLabelImgs.py`` creates.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from libdet.structures import BoxMode
from libdet.utils.file_io import PathManager

__all__ = ["load_cityscapes_instances", "load_cityscapes_semantic"]

logger = logging.getLogger(__name__)


def _cityscapes_labels() -> list:
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as e:
        raise ImportError(
            "Loading Cityscapes instances needs the label table of 'cityscapesscripts': pip install libdet[cityscapes]"
        ) from e
    return list(labels)


def _get_cityscapes_files(image_dir: str, gt_dir: str) -> list[tuple[str, str, str, str]]:
    """(image, instanceIds png, labelIds png, polygons json) for every ``*_leftImg8bit.png`` under ``image_dir``."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image_dir {image_dir!r} is not a directory.")
    files = []
    for city in sorted(PathManager.ls(image_dir)):
        city_img_dir = os.path.join(image_dir, city)
        if not os.path.isdir(city_img_dir):
            continue
        for basename in sorted(PathManager.ls(city_img_dir)):
            if not basename.endswith("_leftImg8bit.png"):
                continue
            stem = os.path.join(gt_dir, city, basename[: -len("leftImg8bit.png")])
            files.append(
                (
                    os.path.join(city_img_dir, basename),
                    stem + "gtFine_instanceIds.png",
                    stem + "gtFine_labelIds.png",
                    stem + "gtFine_polygons.json",
                )
            )
    if not files:
        raise FileNotFoundError(f"No '*_leftImg8bit.png' images found under {image_dir!r}.")
    return files


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _instances_from_png(inst_file: str, id2label: dict, to_polygons: bool) -> tuple[int, int, list[dict]]:
    from PIL import Image

    if not PathManager.isfile(inst_file):
        raise FileNotFoundError(f"Cityscapes instance file {inst_file!r} is missing.")
    with PathManager.open(inst_file, "rb") as f:
        inst = np.asarray(Image.open(f), dtype=np.int64)
    annos = []
    for inst_id in np.unique(inst):
        label_id = inst_id // 1000 if inst_id >= 1000 else inst_id
        label = id2label.get(int(label_id))
        if label is None or label.id < 0 or not label.hasInstances or label.ignoreInEval:
            continue
        mask = inst == inst_id
        ys, xs = np.nonzero(mask)
        anno: dict[str, Any] = {
            "iscrowd": int(inst_id < 1000),
            "category_id": label.id,
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
            "bbox_mode": BoxMode.XYXY_ABS,
        }
        if to_polygons:
            import cv2  # optional: only for polygon output from PNGs

            contours = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
            polys = [(c.reshape(-1, 2) + 0.5).reshape(-1).tolist() for c in contours if len(c) >= 3]
            if not polys:
                continue
            anno["segmentation"] = polys
        else:
            anno["segmentation"] = _rle(mask)
        annos.append(anno)
    return inst.shape[0], inst.shape[1], annos


def _instances_from_json(json_file: str, name2label: dict) -> tuple[int, int, list[dict]]:
    try:
        from shapely.geometry import MultiPolygon, Polygon
    except ImportError as e:
        raise ImportError("load_cityscapes_instances(from_json=True) needs shapely: pip install shapely") from e
    if not PathManager.isfile(json_file):
        raise FileNotFoundError(f"Cityscapes polygon file {json_file!r} is missing.")
    with PathManager.open(json_file) as f:
        data = json.load(f)
    annos = []
    covered = Polygon()
    # Objects later in the file are drawn on top: walk backwards, removing what is already covered.
    for obj in reversed(data["objects"]):
        if obj.get("deleted"):
            continue
        name = obj["label"]
        is_group = name not in name2label and name.endswith("group")
        label = name2label.get(name[: -len("group")] if is_group else name)
        if label is None:
            raise ValueError(f"Unknown Cityscapes label {name!r} in {json_file!r}.")
        if label.id < 0:
            continue
        # Polygon vertices are pixel indices; a 0.5 buffer covers the pixels they name.
        poly = Polygon([(x, y) for x, y in obj["polygon"]]).buffer(0.5, 4)  # 4 segments per quarter circle
        if not label.hasInstances or label.ignoreInEval:
            covered = covered.union(poly)
            continue
        visible = poly.difference(covered)
        if visible.is_empty:
            continue
        covered = covered.union(poly)
        parts = [visible] if isinstance(visible, Polygon) else list(getattr(visible, "geoms", []))
        polys = [np.asarray(p.exterior.coords).reshape(-1).tolist() for p in parts if isinstance(p, Polygon)]
        polys = [p for p in polys if len(p) >= 6]
        if not polys:
            continue
        x0, y0, x1, y1 = (visible if not isinstance(visible, MultiPolygon) else visible).bounds
        annos.append(
            {
                "iscrowd": int(is_group),
                "category_id": label.id,
                "segmentation": polys,
                "bbox": [x0, y0, x1, y1],
                "bbox_mode": BoxMode.XYXY_ABS,
            }
        )
    return int(data["imgHeight"]), int(data["imgWidth"]), annos


def _load_instances_with_labels(
    image_dir: str, gt_dir: str, labels: Sequence, from_json: bool, to_polygons: bool
) -> list[dict]:
    id2label = {lab.id: lab for lab in labels}
    name2label = {lab.name: lab for lab in labels}
    eval_labels = [lab for lab in labels if lab.hasInstances and not lab.ignoreInEval]
    contiguous = {lab.id: i for i, lab in enumerate(eval_labels)}
    dicts = []
    for image_file, inst_file, _, json_file in _get_cityscapes_files(image_dir, gt_dir):
        if from_json:
            h, w, annos = _instances_from_json(json_file, name2label)
        else:
            h, w, annos = _instances_from_png(inst_file, id2label, to_polygons)
        for a in annos:
            a["category_id"] = contiguous[a["category_id"]]
        dicts.append(
            {
                "file_name": image_file,
                "image_id": os.path.basename(image_file)[: -len("_leftImg8bit.png")],
                "height": h,
                "width": w,
                "annotations": annos,
            }
        )
    logger.info(f"Loaded {len(dicts)} Cityscapes images with instances from {image_dir}")
    return dicts


def load_cityscapes_instances(
    image_dir: str, gt_dir: str, from_json: bool = True, to_polygons: bool = True
) -> list[dict]:
    """Load Cityscapes fine instance annotations.

    Args:
        image_dir: e.g. ``cityscapes/leftImg8bit/train``.
        gt_dir: e.g. ``cityscapes/gtFine/train``.
        from_json: read ``*_gtFine_polygons.json`` (overlaps resolved so each pixel belongs to the top-most
            object; needs shapely) instead of ``*_gtFine_instanceIds.png``.
        to_polygons: with PNGs, produce polygons (needs OpenCV) instead of RLE masks. JSON input always gives
            polygons.

    Returns:
        One dict per image: ``file_name``, ``image_id``, ``height``, ``width``, ``annotations`` with ``bbox`` in
        ``XYXY_ABS`` and ``category_id`` contiguous over the 8 evaluated instance classes
        (``builtin_meta.CITYSCAPES_THING_CLASSES``). Instance-less groups become ``iscrowd=1``.
    """
    return _load_instances_with_labels(image_dir, gt_dir, _cityscapes_labels(), from_json, to_polygons)


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> list[dict]:
    """Pair Cityscapes images with their ``*_gtFine_labelTrainIds.png`` (train ids 0..18, 255 ignored).

    Returns:
        ``[{"file_name", "sem_seg_file_name", "height", "width"}, ...]``; sizes come from the polygon json
        when it exists (otherwise they are left out).

    Raises:
        FileNotFoundError: a label file is missing (names it and how to create it).
    """
    dicts = []
    for image_file, _, label_file, json_file in _get_cityscapes_files(image_dir, gt_dir):
        label_file = label_file.replace("labelIds", "labelTrainIds")
        if not PathManager.isfile(label_file):
            raise FileNotFoundError(
                f"Cityscapes label file {label_file!r} is missing; create the *_labelTrainIds.png files with "
                "cityscapesscripts/preparation/createTrainIdLabelImgs.py."
            )
        record = {"file_name": image_file, "sem_seg_file_name": label_file}
        if PathManager.isfile(json_file):
            with PathManager.open(json_file) as f:
                meta = json.load(f)
            record["height"], record["width"] = int(meta["imgHeight"]), int(meta["imgWidth"])
        dicts.append(record)
    logger.info(f"Loaded {len(dicts)} Cityscapes images with semantic labels from {image_dir}")
    return dicts
