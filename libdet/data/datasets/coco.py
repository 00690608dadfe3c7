"""COCO-format instance annotations: loading into libdet dataset dicts, registration, and conversion back.

Dataset dicts produced by :func:`load_coco_json` (one per image)::

    {"file_name": str, "height": int, "width": int, "image_id": <image id from the json>,
     "annotations": [{"id": <annotation id from the json>, "bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS,
                      "category_id": int (contiguous), "iscrowd": 0|1,
                      "segmentation": list[list[float]] | {"size": [h, w], "counts": str},
                      "keypoints": [x1, y1, v1, ...], <extra keys>}, ...]}

Every annotation is checked by :class:`libdet.data.validation.AnnotationValidator`, whose table lists the
policy for each problem: malformed annotations (NaN or negative-size boxes, odd-length or non-numeric polygons,
category ids outside ``categories``, keypoints not ``3 * K`` values, an RLE whose size differs from the image's)
raise :class:`~libdet.data.errors.AnnotationError` naming the json file, the image and the annotation id;
polygons with fewer than 3 points are removed, and annotations left without a polygon or whose box lies
entirely outside the image are dropped. A per-file summary of what was dropped is logged. Besides:

* annotations with an empty box (``w == 0`` or ``h == 0``) are *kept* here; they are removed when the
  annotations are turned into ``Instances`` (``libdet.data.detection_utils.filter_empty_instances`` in the
  dataset mapper);
* images without annotations are kept; ``libdet.data.get_detection_dataset_dicts(filter_empty=True)``
  removes them for training.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from libdet.structures import BoxMode
from libdet.utils.file_io import PathManager, atomic_write

from ..catalog import DatasetCatalog, MetadataCatalog
from ..errors import AnnotationError
from ..validation import AnnotationValidator, describe_annotation

__all__ = [
    "load_coco_json",
    "load_sem_seg",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "register_coco_instances",
]

logger = logging.getLogger(__name__)

_ANN_KEYS = ("iscrowd", "bbox", "keypoints", "category_id")


def _read_json(json_file: str) -> Any:
    if not PathManager.exists(json_file):
        raise FileNotFoundError(f"Annotation file {json_file!r} does not exist.")
    with PathManager.open(json_file, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Annotation file {json_file!r} is not valid JSON: {e}") from e


def _category_mapping(categories: list[dict], json_file: str) -> tuple[dict[int, int], list[str]]:
    """Contiguous ids (0..K-1) for the json's category ids sorted ascending, and the class names."""
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Category ids in {json_file!r} are not unique: {sorted(ids)}.")
    by_id = {c["id"]: c for c in categories}
    sorted_ids = sorted(ids)
    names = [by_id[i]["name"] for i in sorted_ids]
    if sorted_ids != list(range(1, len(sorted_ids) + 1)):
        # Normal for COCO itself (ids 1..90 for 80 classes).
        logger.debug(f"Category ids in {json_file!r} are not 1..K; they are mapped to contiguous 0..K-1.")
    return {cid: i for i, cid in enumerate(sorted_ids)}, names


def _index_annotations(data: dict, json_file: str) -> dict[Any, list[dict]]:
    """Group annotations by image id, checking image ids and annotation ids are unique and consistent."""
    image_ids = [img["id"] for img in data.get("images", [])]
    seen: set = set()
    for iid in image_ids:
        if iid in seen:
            raise ValueError(f"Image id {iid!r} appears more than once in 'images' of {json_file!r}.")
        seen.add(iid)
    per_image: dict[Any, list[dict]] = {iid: [] for iid in image_ids}
    ann_ids: set = set()
    for ann in data.get("annotations", []):
        aid = ann.get("id")
        if aid is not None:
            if aid in ann_ids:
                raise ValueError(f"Annotation id {aid!r} appears more than once in {json_file!r}.")
            ann_ids.add(aid)
        iid = ann.get("image_id")
        if iid not in per_image:
            raise ValueError(
                f"Annotation id {aid!r} in {json_file!r} refers to image id {iid!r}, which is not in 'images'."
            )
        per_image[iid].append(ann)
    return per_image


def _compress_rle(segm: dict) -> dict:
    """A COCO RLE with ``str`` counts (uncompressed ``list`` counts are compressed)."""
    if isinstance(segm["counts"], list):  # uncompressed RLE
        from pycocotools import mask as mask_util

        h, w = segm["size"]
        segm = mask_util.frPyObjects(segm, h, w)
    counts = segm["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in segm["size"]], "counts": counts}


def _convert_annotation(
    anno: dict,
    record: dict,
    id_map: dict[int, int],
    ann_keys: Iterable[str],
    validator: AnnotationValidator,
) -> dict | None:
    """One COCO annotation as a libdet annotation dict, checked by ``validator``; None when it is dropped."""
    ann_id = anno.get("id")
    where = describe_annotation(ann_id, record["file_name"], validator.source)
    if anno.get("ignore", 0) != 0:
        raise AnnotationError(f"{where} has 'ignore' set, which libdet does not support.")
    obj = {key: anno[key] for key in ann_keys if key in anno}
    if ann_id is not None:
        obj["id"] = ann_id
    if "category_id" not in obj:
        raise AnnotationError(f"{where} has no 'category_id'.")
    cid = obj["category_id"]
    if isinstance(cid, bool) or cid not in id_map:
        raise AnnotationError(f"{where} has category_id {cid!r}, which is not in 'categories' (ids: {sorted(id_map)}).")
    obj["category_id"] = id_map[cid]
    obj.setdefault("iscrowd", 0)
    obj["bbox_mode"] = BoxMode.XYWH_ABS
    if anno.get("segmentation") is not None:
        obj["segmentation"] = anno["segmentation"]
    size = (record["height"], record["width"]) if record["height"] and record["width"] else None
    if not validator.check(obj, file_name=record["file_name"], image_size=size):
        return None
    obj["bbox"] = [float(v) for v in obj["bbox"]]
    if "segmentation" in obj:
        segm = obj["segmentation"]
        obj["segmentation"] = _compress_rle(segm) if isinstance(segm, dict) else [[float(c) for c in p] for p in segm]
    if "keypoints" in obj:
        # COCO keypoints are integer pixel indices in [0, W-1]; adding 0.5 moves them to the pixel centre
        # in libdet's continuous coordinates (where boxes and polygons live), as detectron2 does.
        obj["keypoints"] = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(obj["keypoints"])]
    return obj


def _num_keypoints(categories: list[dict], json_file: str) -> int | None:
    """K when the categories name their keypoints (COCO person keypoints), else None."""
    lengths = {len(c["keypoints"]) for c in categories if c.get("keypoints")}
    if len(lengths) > 1:
        raise ValueError(f"Categories in {json_file!r} define different numbers of keypoints: {sorted(lengths)}.")
    return lengths.pop() if lengths else None


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
) -> list[dict]:
    """Load a COCO-format instances / keypoints json into libdet's dataset dicts.

    Args:
        json_file: path to the COCO json.
        image_root: directory joined in front of each image's ``file_name``.
        dataset_name: when given, sets ``thing_classes`` (names ordered by category id) and
            ``thing_dataset_id_to_contiguous_id`` in ``MetadataCatalog.get(dataset_name)``.
        extra_annotation_keys: annotation fields copied into each annotation dict besides
            ``iscrowd, bbox, keypoints, category_id, segmentation``.

    Returns:
        One dict per image (see the module docstring); ``category_id`` is the contiguous id (0..K-1, sorted
        by the json's category id). Image sizes come from the json; image files are not opened.

    Raises:
        FileNotFoundError: ``json_file`` is missing.
        ValueError: duplicate image or annotation ids, or an annotation of an unknown image id (the message
            names the file and the id).
        AnnotationError: a malformed annotation (a ``ValueError``; see the module docstring), naming the file,
            the image and the annotation id.
    """
    data = _read_json(json_file)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{json_file!r} is not a COCO json: it has no 'images' list.")
    id_map, thing_classes = _category_mapping(data.get("categories", []), json_file)
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(thing_classes=thing_classes, thing_dataset_id_to_contiguous_id=id_map)
    per_image = _index_annotations(data, json_file)
    ann_keys = list(_ANN_KEYS) + list(extra_annotation_keys or [])
    validator = AnnotationValidator(
        json_file,
        num_classes=len(id_map),
        num_keypoints=_num_keypoints(data.get("categories", []), json_file),
    )
    dataset_dicts = []
    for img in data["images"]:
        record = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": img.get("height"),
            "width": img.get("width"),
            "image_id": img["id"],
        }
        objs = []
        for anno in per_image[img["id"]]:
            obj = _convert_annotation(anno, record, id_map, ann_keys, validator)
            if obj is not None:
                objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)
    logger.info(f"Loaded {len(dataset_dicts)} images in COCO format from {json_file}")
    validator.log_summary(logger)
    return dataset_dicts


def _list_files(root: str, ext: str) -> dict[str, str]:
    """Map path relative to ``root`` without extension -> full path, for files ending in ``.<ext>``."""
    suffix = "." + ext.lstrip(".")
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(suffix):
                full = os.path.join(dirpath, f)
                out[os.path.relpath(full, root)[: -len(suffix)]] = full
    return out


def load_sem_seg(gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg") -> list[dict]:
    """Pair images with semantic-segmentation label files by their path relative to the roots.

    ``image_root/a/b.jpg`` pairs with ``gt_root/a/b.png``. Ground-truth files without an image are ignored
    (their count is logged).

    Args:
        gt_root: directory of label images (one class id per pixel).
        image_root: directory of images.
        gt_ext: extension of the label files.
        image_ext: extension of the images.

    Returns:
        ``[{"file_name": image path, "sem_seg_file_name": label path}, ...]`` sorted by relative path.

    Raises:
        FileNotFoundError: a root does not exist, or an image has no label file (names the expected file).
    """
    for arg, root in (("image_root", image_root), ("gt_root", gt_root)):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"load_sem_seg: {arg} {root!r} is not a directory.")
    images = _list_files(image_root, image_ext)
    gts = _list_files(gt_root, gt_ext)
    dicts = []
    for key in sorted(images):
        if key not in gts:
            expected = os.path.join(gt_root, key + "." + gt_ext.lstrip("."))
            raise FileNotFoundError(
                f"load_sem_seg: image {images[key]!r} has no ground-truth file; expected {expected!r}."
            )
        dicts.append({"file_name": images[key], "sem_seg_file_name": gts[key]})
    unused = len(set(gts) - set(images))
    if unused:
        logger.warning(f"load_sem_seg: {unused} files in {gt_root} have no image in {image_root}; ignored.")
    logger.info(f"Loaded {len(dicts)} images with semantic segmentation from {image_root}")
    return dicts


def _annotation_area(ann: dict, bbox_xyxy: list[float], mode: BoxMode) -> float:
    segm = ann.get("segmentation")
    if isinstance(segm, list) and segm:
        from libdet.structures import PolygonMasks

        return float(PolygonMasks([segm]).area()[0].item())
    if isinstance(segm, dict):
        from pycocotools import mask as mask_util

        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        return float(mask_util.area(rle))
    if mode == BoxMode.XYWHA_ABS:
        return float(ann["bbox"][2] * ann["bbox"][3])
    return float((bbox_xyxy[2] - bbox_xyxy[0]) * (bbox_xyxy[3] - bbox_xyxy[1]))


def _to_coco_annotation(ann: dict, ann_id: int, image_id: Any, reverse_id: dict[int, int] | None) -> dict:
    mode = BoxMode(ann["bbox_mode"])
    if mode == BoxMode.XYWHA_ABS:  # rotated boxes stay (cx, cy, w, h, angle)
        bbox = [float(v) for v in ann["bbox"]]
        xyxy = bbox
    else:
        xyxy = [float(v) for v in BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYXY_ABS)]
        bbox = [float(v) for v in BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)]
    out = {
        "id": ann_id,
        "image_id": image_id,
        "bbox": [round(v, 3) for v in bbox],
        "area": _annotation_area(ann, xyxy, mode),
        "iscrowd": int(ann.get("iscrowd", 0)),
        "category_id": reverse_id[ann["category_id"]] if reverse_id else ann["category_id"],
    }
    if "segmentation" in ann:
        segm = ann["segmentation"]
        if isinstance(segm, dict) and isinstance(segm["counts"], bytes):
            segm = {"size": segm["size"], "counts": segm["counts"].decode("ascii")}
        out["segmentation"] = segm
    if "keypoints" in ann:
        kps = [v - 0.5 if i % 3 != 2 else v for i, v in enumerate(ann["keypoints"])]  # undo the loader's +0.5
        out["keypoints"] = kps
        out["num_keypoints"] = int(sum(1 for v in kps[2::3] if v > 0))
    return out


def convert_to_coco_dict(dataset_name: str) -> dict:
    """Convert a registered dataset (libdet dicts) into a COCO-format json dict.

    Contiguous category ids are mapped back through the metadata's ``thing_dataset_id_to_contiguous_id``
    when present; keypoints lose the 0.5 shift that :func:`load_coco_json` adds; areas are polygon / RLE
    areas when a mask exists, box areas otherwise. Annotation ids are assigned 1, 2, ...
    """
    dataset_dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    reverse_id = {v: k for k, v in id_map.items()} if id_map else None
    thing_classes = metadata.get("thing_classes")
    if thing_classes is None:
        raise ValueError(f"convert_to_coco_dict: metadata of {dataset_name!r} has no 'thing_classes'.")
    categories = [{"id": reverse_id[i] if reverse_id else i, "name": name} for i, name in enumerate(thing_classes)]
    images, annotations = [], []
    for index, record in enumerate(dataset_dicts):
        image_id = record.get("image_id", index)
        images.append(
            {
                "id": image_id,
                "width": int(record["width"]),
                "height": int(record["height"]),
                "file_name": str(record["file_name"]),
            }
        )
        for ann in record.get("annotations", []):
            annotations.append(_to_coco_annotation(ann, len(annotations) + 1, image_id, reverse_id))
    logger.info(f"Converted {dataset_name}: {len(images)} images, {len(annotations)} annotations to COCO format.")
    info = {
        "date_created": str(datetime.datetime.now()),
        "description": f"Automatically generated COCO json of libdet dataset {dataset_name!r}.",
    }
    coco_dict = {"info": info, "images": images, "categories": categories, "licenses": None}
    if annotations:
        coco_dict["annotations"] = annotations
    return coco_dict


def convert_to_coco_json(dataset_name: str, output_file: str, allow_cached: bool = True) -> None:
    """Write :func:`convert_to_coco_dict` of ``dataset_name`` to ``output_file`` (atomically).

    Args:
        dataset_name: a dataset registered in ``DatasetCatalog``.
        output_file: the json path to write.
        allow_cached: keep an existing ``output_file`` instead of rewriting it.
    """
    if allow_cached and PathManager.exists(output_file):
        logger.warning(f"Using cached COCO json {output_file} for {dataset_name}; delete it to regenerate.")
        return
    coco_dict = convert_to_coco_dict(dataset_name)
    logger.info(f"Writing COCO json of {dataset_name} to {output_file}")
    with atomic_write(output_file, "w") as f:
        json.dump(coco_dict, f)


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a COCO-format instances dataset under ``name`` (nothing is read until it is used).

    Args:
        name: the dataset name, e.g. ``"my_train"``.
        metadata: extra metadata (may be empty); ``json_file``, ``image_root`` and ``evaluator_type="coco"``
            are added.
        json_file: path to the COCO json.
        image_root: directory of the images.
    """
    if not isinstance(name, str):
        raise TypeError(f"register_coco_instances: name must be a str, got {type(name).__name__}.")
    if not isinstance(json_file, (str, os.PathLike)):
        raise TypeError(f"register_coco_instances({name!r}): json_file must be a path, got {type(json_file)}.")
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)
