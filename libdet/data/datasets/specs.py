"""Datasets named by where their files are: a spec works wherever a registered dataset name does.

=======================================  ==================================================================
spec                                     dataset
=======================================  ==================================================================
``coco:<annotations.json>@<image_dir>``  a COCO instances json and its images
``lvis:<annotations.json>@<image_dir>``  an LVIS json and its images
``voc:<dir>[@<split>]``                  a VOC-style folder (``Annotations/``, ``JPEGImages/``,
                                         ``ImageSets/Main/<split>.txt``; default split ``trainval``)
``yolo:<dir>[@<split>]``                 ``<dir>/images[/<split>]`` and ``<dir>/labels[/<split>]`` (one
                                         ``class cx cy w h`` line per object, normalised; class names from
                                         ``classes.txt``, ``obj.names`` or ``data.yaml``)
=======================================  ==================================================================

Any spec may end in ``%train`` or ``%val`` to take a deterministic train/validation split of one annotation
set (an image goes to validation by a hash of its file name, so the split never changes as files are added);
``%train:0.2`` / ``%val:0.2`` set the validation fraction (default 0.1). (``%`` rather than ``#``, which the
command-line override grammar does not accept unquoted.)::

    python tools/lazyconfig_train_net.py --config-file configs/COCO/faster_rcnn_r50.py \\
        dataloader.train.dataset.names=coco:data/all.json@data/images%train \\
        dataloader.test.dataset.names=coco:data/all.json@data/images%val

The class names come from the data (``MetadataCatalog.get(spec).thing_classes``), and the evaluation json is
the annotation json (COCO, LVIS) or a COCO json converted once into ``$LIBDET_CACHE`` (default
``~/.cache/libdet``) under ``dataset_specs/``. Nothing is read until the spec is first used.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import yaml
from PIL import Image, UnidentifiedImageError

from libdet.structures import BoxMode

from ..catalog import DatasetCatalog, MetadataCatalog, register_dataset_spec_kind
from ..errors import AnnotationError, ImageReadError
from .coco import _read_json, convert_to_coco_json, load_coco_json
from .lvis import load_lvis_json, lvis_categories_from_json
from .pascal_voc import load_voc_instances

__all__ = ["DatasetSpec", "load_yolo_instances", "parse_dataset_spec", "yolo_class_names"]

logger = logging.getLogger(__name__)

KINDS = ("coco", "lvis", "voc", "yolo")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: ``kind``, its ``path`` (json or folder), ``location`` (image folder or split; may be
    empty), and the ``subset`` (``""``, ``"train"`` or ``"val"``) with its validation fraction."""

    kind: str
    path: str
    location: str
    subset: str
    val_fraction: float


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse ``"<kind>:<path>[@<location>][%train|%val[:<fraction>]]"``; a ``ValueError`` names what is wrong."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(f"Dataset spec {spec!r}: expected '<kind>:...' with kind one of {KINDS}.")
    subset, val_fraction = "", DEFAULT_VAL_FRACTION
    if "%" in rest:
        rest, _, split = rest.rpartition("%")
        subset, _, fraction = split.partition(":")
        if subset not in ("train", "val"):
            raise ValueError(f"Dataset spec {spec!r}: the part after '%' must be 'train' or 'val', got {split!r}.")
        if fraction:
            try:
                val_fraction = float(fraction)
            except ValueError:
                val_fraction = -1.0
            if not 0.0 < val_fraction < 1.0:
                raise ValueError(f"Dataset spec {spec!r}: the validation fraction must be in (0, 1), got {fraction!r}.")
    path, _, location = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if not path:
        raise ValueError(f"Dataset spec {spec!r}: no path after '{kind}:'.")
    if kind in ("coco", "lvis") and not location:
        raise ValueError(f"Dataset spec {spec!r}: expected '{kind}:<annotations.json>@<image_dir>'.")
    return DatasetSpec(kind, path, location, subset, val_fraction)


def _in_val(file_name: str, fraction: float) -> bool:
    return zlib.crc32(os.path.basename(file_name).encode()) / 2**32 < fraction


def _subset(dicts: list[dict], spec: DatasetSpec) -> list[dict]:
    if not spec.subset:
        return dicts
    return [d for d in dicts if _in_val(d["file_name"], spec.val_fraction) == (spec.subset == "val")]


def yolo_class_names(root: str) -> list[str]:
    """Class names of a YOLO folder: ``classes.txt`` / ``obj.names`` (one per line) or ``data.yaml`` /
    ``dataset.yaml`` (``names``: a list, or a dict from id to name)."""
    for name in ("classes.txt", "obj.names", "classes.names"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path) as f:
                return [line.strip() for line in f if line.strip()]
    for name in ("data.yaml", "dataset.yaml"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path) as f:
                names = (yaml.safe_load(f) or {}).get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
            raise ValueError(f"{path}: 'names' must be a list or a mapping of class ids to names.")
    raise FileNotFoundError(
        f"YOLO dataset {root!r} has no class names: add classes.txt (one name per line) or data.yaml ('names')."
    )


def _image_size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError) as e:
        raise ImageReadError(f"Cannot read the image {path!r}: {e}") from e
    return height, width


def _yolo_annotations(label_file: str, class_names: list[str], height: int, width: int) -> list[dict]:
    annotations = []
    with open(label_file) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        values = line.split()
        if not values:
            continue
        where = f"{label_file}:{number}"
        try:
            class_id, coords = int(values[0]), [float(v) for v in values[1:]]
        except ValueError as e:
            raise AnnotationError(f"{where}: expected 'class cx cy w h' (numbers), got {line!r}.") from e
        if not 0 <= class_id < len(class_names):
            raise AnnotationError(f"{where}: class {class_id} is outside the {len(class_names)} class names.")
        if len(coords) == 4:
            cx, cy, w, h = coords
            if w < 0 or h < 0:
                raise AnnotationError(f"{where}: negative box size in {line!r}.")
            box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
            annotations.append({"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": class_id, "iscrowd": 0})
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # YOLO segmentation: a normalised polygon
            polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
            xs, ys = polygon[0::2], polygon[1::2]
            annotations.append(
                {
                    "bbox": [min(xs), min(ys), max(xs), max(ys)],
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "segmentation": [polygon],
                    "category_id": class_id,
                    "iscrowd": 0,
                }
            )
        else:
            raise AnnotationError(f"{where}: expected 4 box values or an even number (>= 6) of polygon values.")
    return annotations


def load_yolo_instances(root: str, split: str = "", class_names: list[str] | None = None) -> list[dict]:
    """Load a YOLO-format folder: every image of ``images[/<split>]`` with ``labels[/<split>]/<stem>.txt``
    (an image without a label file has no objects)."""
    class_names = yolo_class_names(root) if class_names is None else class_names
    image_dir = os.path.join(root, "images", split) if split else os.path.join(root, "images")
    label_dir = os.path.join(root, "labels", split) if split else os.path.join(root, "labels")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"YOLO dataset {root!r}: no image folder {image_dir!r}.")
    images = sorted(p for p in glob.glob(os.path.join(image_dir, "*")) if p.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise FileNotFoundError(f"YOLO dataset {root!r}: {image_dir!r} holds no images.")
    dicts = []
    for image_id, path in enumerate(images):
        height, width = _image_size(path)
        label_file = os.path.join(label_dir, os.path.splitext(os.path.basename(path))[0] + ".txt")
        annotations = _yolo_annotations(label_file, class_names, height, width) if os.path.isfile(label_file) else []
        dicts.append(
            {"file_name": path, "image_id": image_id, "height": height, "width": width, "annotations": annotations}
        )
    return dicts


def voc_class_names(root: str) -> list[str]:
    """The object names used in a VOC-style folder's ``Annotations/*.xml``, sorted."""
    names = set()
    for path in glob.glob(os.path.join(root, "Annotations", "*.xml")):
        names.update(obj.findtext("name", "").strip() for obj in ET.parse(path).findall("object"))
    names.discard("")
    if not names:
        raise FileNotFoundError(f"VOC dataset {root!r}: no object names found in {root}/Annotations/*.xml.")
    return sorted(names)


def _cache_json(spec_text: str, sources: list[str]) -> str:
    """Where the COCO json converted from a spec's annotations goes; keyed by the spec and its files' times."""
    stamp = max((os.path.getmtime(p) for p in sources if os.path.exists(p)), default=0.0)
    key = hashlib.sha1(f"{spec_text}|{stamp}".encode()).hexdigest()[:16]
    root = os.environ.get("LIBDET_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "libdet"))
    return os.path.join(root, "dataset_specs", f"{key}.json")


def _register(name: str, spec: DatasetSpec) -> None:
    meta = MetadataCatalog.get(name)
    if spec.kind in ("coco", "lvis"):
        if not os.path.isfile(spec.path):
            raise FileNotFoundError(f"Dataset spec {name!r}: annotation file {spec.path!r} does not exist.")
        if spec.kind == "coco":
            categories = _read_json(spec.path).get("categories", [])
            thing_classes = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
            # with the dataset name, load_coco_json records thing_dataset_id_to_contiguous_id, which COCO evaluation
            # needs to map predicted classes back to the json's category ids
            loader: Callable[[], list[dict]] = lambda: load_coco_json(spec.path, spec.location, name)  # noqa: E731
            meta.set(thing_classes=thing_classes, evaluator_type="coco")
        else:
            loader = lambda: load_lvis_json(spec.path, spec.location)  # noqa: E731
            meta.set(**lvis_categories_from_json(spec.path), evaluator_type="lvis")
        DatasetCatalog.register(name, lambda: _subset(loader(), spec))
        meta.set(json_file=spec.path, image_root=spec.location)
        return
    if spec.kind == "yolo":
        class_names = yolo_class_names(spec.path)
        loader = lambda: load_yolo_instances(spec.path, spec.location, class_names)  # noqa: E731
        sources = [spec.path, os.path.join(spec.path, "labels", spec.location)]
    else:
        split = spec.location or "trainval"
        class_names = voc_class_names(spec.path)
        loader = lambda: load_voc_instances(spec.path, split, class_names)  # noqa: E731
        sources = [os.path.join(spec.path, "Annotations"), os.path.join(spec.path, "ImageSets", "Main")]
    DatasetCatalog.register(name, lambda: _subset(loader(), spec))
    meta.set(thing_classes=class_names, evaluator_type="coco")
    # COCO evaluation reads a json: convert once (cached by the annotations' modification times).
    json_file = _cache_json(name, sources)
    convert_to_coco_json(name, json_file)
    meta.set(json_file=json_file)


def _resolve(name: str) -> None:
    spec = parse_dataset_spec(name)
    try:
        _register(name, spec)
    except Exception:
        # A half-registered spec would hide the error on the next use: leave the catalogs as they were.
        if name in DatasetCatalog.data:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.data:
            MetadataCatalog.remove(name)
        raise
    logger.info(f"Registered dataset spec {name!r} ({len(MetadataCatalog.get(name).thing_classes)} classes).")


for _kind in KINDS:
    register_dataset_spec_kind(_kind, _resolve)
