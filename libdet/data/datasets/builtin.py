"""Registration of the built-in datasets (runs at import; reads no file until a dataset is used).

Datasets live under the root ``$LIBDET_DATASETS`` (default ``./datasets``, read when this module is
imported) in detectron2's layout::

    coco/{train,val,test}2014|2017/, coco/annotations/{instances,person_keypoints,panoptic}_*.json,
    coco/panoptic_{train,val}2017/, coco/panoptic_stuff_{train,val}2017/
    lvis/lvis_v1_{train,val}.json, lvis/lvis_v0.5_*.json (images from coco/)
    cityscapes/leftImg8bit/{train,val,test}/, cityscapes/gtFine/{train,val,test}/,
    cityscapes/gtFine/cityscapes_panoptic_{train,val}[.json]
    VOC2007/, VOC2012/
    ADEChallengeData2016/images/{training,validation}/, ADEChallengeData2016/annotations_detectron2/...,
    ADEChallengeData2016/objectInfo150.csv (or .txt)

When a registered dataset is used and a file it needs is missing, the error names the expected path and
``LIBDET_DATASETS``. The synthetic ``shapes_*`` datasets need no download: they are generated into a cache
folder (``shapes.shapes_cache_dir()``) on first use. Their metadata ``json_file`` points at the json that
exists once ``DatasetCatalog.get("shapes_<split>")`` (or ``shapes.prepare_shapes_dataset(split)``) has run.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Callable

from ..catalog import DatasetCatalog, MetadataCatalog
from . import shapes
from .builtin_meta import get_builtin_metadata
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .cityscapes_panoptic import register_all_cityscapes_panoptic
from .coco import load_coco_json, load_sem_seg
from .coco_panoptic import register_coco_panoptic, register_coco_panoptic_separated
from .lvis import load_lvis_json
from .pascal_voc import load_voc_instances

__all__ = ["register_all", "datasets_root"]

_COCO_SPLITS = {
    "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
    "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
    "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
    "coco_2014_valminusminival": ("coco/val2014", "coco/annotations/instances_valminusminival2014.json"),
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_test": ("coco/test2017", "coco/annotations/image_info_test2017.json"),
    "coco_2017_test-dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
    "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
}
_COCO_PERSON_SPLITS = {
    "keypoints_coco_2014_train": ("coco/train2014", "coco/annotations/person_keypoints_train2014.json"),
    "keypoints_coco_2014_val": ("coco/val2014", "coco/annotations/person_keypoints_val2014.json"),
    "keypoints_coco_2014_minival": ("coco/val2014", "coco/annotations/person_keypoints_minival2014.json"),
    "keypoints_coco_2014_valminusminival": (
        "coco/val2014",
        "coco/annotations/person_keypoints_valminusminival2014.json",
    ),
    "keypoints_coco_2017_train": ("coco/train2017", "coco/annotations/person_keypoints_train2017.json"),
    "keypoints_coco_2017_val": ("coco/val2017", "coco/annotations/person_keypoints_val2017.json"),
    "keypoints_coco_2017_val_100": ("coco/val2017", "coco/annotations/person_keypoints_val2017_100.json"),
}
# name -> (panoptic PNG root, panoptic json, semantic "stuff" PNG root); images/instances from the name
# without "_panoptic".
_COCO_PANOPTIC_SPLITS = {
    "coco_2017_train_panoptic": (
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_stuff_train2017",
    ),
    "coco_2017_val_panoptic": (
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_stuff_val2017",
    ),
    "coco_2017_val_100_panoptic": (
        "coco/panoptic_val2017_100",
        "coco/annotations/panoptic_val2017_100.json",
        "coco/panoptic_stuff_val2017_100",
    ),
}
_LVIS_SPLITS = {
    "lvis_v1_train": ("coco/", "lvis/lvis_v1_train.json"),
    "lvis_v1_val": ("coco/", "lvis/lvis_v1_val.json"),
    "lvis_v1_test_dev": ("coco/", "lvis/lvis_v1_image_info_test_dev.json"),
    "lvis_v1_test_challenge": ("coco/", "lvis/lvis_v1_image_info_test_challenge.json"),
    "lvis_v0.5_train": ("coco/train2017", "lvis/lvis_v0.5_train.json"),
    "lvis_v0.5_val": ("coco/val2017", "lvis/lvis_v0.5_val.json"),
    "lvis_v0.5_val_rand_100": ("coco/val2017", "lvis/lvis_v0.5_val_rand_100.json"),
    "lvis_v0.5_test": ("coco/test2017", "lvis/lvis_v0.5_image_info_test.json"),
    "lvis_v0.5_train_cocofied": ("coco/train2017", "lvis/lvis_v0.5_train_cocofied.json"),
    "lvis_v0.5_val_cocofied": ("coco/val2017", "lvis/lvis_v0.5_val_cocofied.json"),
}
_VOC_SPLITS = [
    ("voc_2007_trainval", "VOC2007", "trainval"),
    ("voc_2007_train", "VOC2007", "train"),
    ("voc_2007_val", "VOC2007", "val"),
    ("voc_2007_test", "VOC2007", "test"),
    ("voc_2012_trainval", "VOC2012", "trainval"),
    ("voc_2012_train", "VOC2012", "train"),
    ("voc_2012_val", "VOC2012", "val"),
]


def datasets_root() -> str:
    """``$LIBDET_DATASETS`` (default ``datasets``), user-expanded."""
    return os.path.expanduser(os.getenv("LIBDET_DATASETS", "datasets"))


def _require(name: str, *paths: str) -> None:
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Dataset {name!r} needs {path!r}, which does not exist. Built-in datasets are looked up under "
                f"$LIBDET_DATASETS (now {os.getenv('LIBDET_DATASETS', 'unset: ./datasets')!r}); set it to the "
                "folder that holds the dataset in detectron2's layout."
            )


def _checked(name: str, paths: tuple[str, ...], load: Callable[[], list[dict]]) -> Callable[[], list[dict]]:
    def func() -> list[dict]:
        _require(name, *paths)
        return load()

    func.__qualname__ = f"load_{name}"
    return func


def _register_coco(root: str) -> None:
    for splits, meta_key in ((_COCO_SPLITS, "coco"), (_COCO_PERSON_SPLITS, "coco_person")):
        for name, (image_dir, json_rel) in splits.items():
            image_root, json_file = os.path.join(root, image_dir), os.path.join(root, json_rel)
            load = functools.partial(load_coco_json, json_file, image_root, name)
            DatasetCatalog.register(name, _checked(name, (json_file, image_root), load))
            MetadataCatalog.get(name).set(
                json_file=json_file, image_root=image_root, evaluator_type="coco", **get_builtin_metadata(meta_key)
            )
    for name, (pan_root, pan_json, stuff_root) in _COCO_PANOPTIC_SPLITS.items():
        image_dir, instances_rel = _COCO_SPLITS[name[: -len("_panoptic")]]
        image_root, instances_json = os.path.join(root, image_dir), os.path.join(root, instances_rel)
        pan_root, pan_json, stuff_root = (os.path.join(root, p) for p in (pan_root, pan_json, stuff_root))
        register_coco_panoptic(name, {}, image_root, pan_root, pan_json, instances_json)
        register_coco_panoptic_separated(
            name, get_builtin_metadata("coco"), image_root, pan_root, pan_json, stuff_root, instances_json
        )
        # Wrap the loaders so missing files name the path and LIBDET_DATASETS.
        for full, needed in (
            (name, (pan_json, pan_root, image_root)),
            (name + "_separated", (instances_json, stuff_root, image_root, pan_json)),
            (name + "_stuffonly", (stuff_root, image_root, pan_json)),
        ):
            load = DatasetCatalog.pop(full)
            DatasetCatalog.register(full, _checked(full, needed, load))


def _register_lvis(root: str) -> None:
    for name, (image_dir, json_rel) in _LVIS_SPLITS.items():
        image_root, json_file = os.path.join(root, image_dir), os.path.join(root, json_rel)
        load = functools.partial(load_lvis_json, json_file, image_root, name)
        DatasetCatalog.register(name, _checked(name, (json_file, image_root), load))
        # Class names and image counts come from the json when the dataset is loaded.
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis")


def _register_cityscapes(root: str) -> None:
    meta = get_builtin_metadata("cityscapes")
    for split in ("train", "val", "test"):
        image_dir = os.path.join(root, "cityscapes/leftImg8bit", split)
        gt_dir = os.path.join(root, "cityscapes/gtFine", split)
        name = f"cityscapes_fine_instance_seg_{split}"
        load = functools.partial(load_cityscapes_instances, image_dir, gt_dir, from_json=True, to_polygons=True)
        DatasetCatalog.register(name, _checked(name, (image_dir, gt_dir), load))
        MetadataCatalog.get(name).set(image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_instance", **meta)
        name = f"cityscapes_fine_sem_seg_{split}"
        load = functools.partial(load_cityscapes_semantic, image_dir, gt_dir)
        DatasetCatalog.register(name, _checked(name, (image_dir, gt_dir), load))
        MetadataCatalog.get(name).set(
            image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_sem_seg", ignore_label=255, **meta
        )


def _register_voc(root: str) -> None:
    classes = get_builtin_metadata("pascal_voc")["thing_classes"]
    for name, folder, split in _VOC_SPLITS:
        dirname = os.path.join(root, folder)
        year = 2007 if "2007" in name else 2012
        load = functools.partial(load_voc_instances, dirname, split, classes)
        DatasetCatalog.register(name, _checked(name, (dirname,), load))
        MetadataCatalog.get(name).set(
            thing_classes=classes, dirname=dirname, year=year, split=split, evaluator_type="pascal_voc"
        )


def ade20k_classes(dirname: str) -> list[str]:
    """The 150 ADE20K scene-parsing class names, read from ``objectInfo150.csv`` (or ``.txt``) in ``dirname``.

    Uses the first synonym of the ``Name`` column (``"building;edifice"`` -> ``"building"``), in ``Idx`` order.
    """
    for fname, delimiter in (("objectInfo150.csv", ","), ("objectInfo150.txt", "\t")):
        path = os.path.join(dirname, fname)
        if os.path.isfile(path):
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter=delimiter))
            if not rows or "Name" not in rows[0] or "Idx" not in rows[0]:
                raise ValueError(f"{path!r} needs 'Idx' and 'Name' columns.")
            rows.sort(key=lambda r: int(r["Idx"]))
            return [r["Name"].split(";")[0].strip() for r in rows]
    raise FileNotFoundError(
        f"ADE20K class names not found: expected {os.path.join(dirname, 'objectInfo150.csv')!r} (or .txt)."
    )


def _register_ade20k(root: str) -> None:
    dirname = os.path.join(root, "ADEChallengeData2016")
    for name, sub in (("train", "training"), ("val", "validation")):
        image_dir = os.path.join(dirname, "images", sub)
        gt_dir = os.path.join(dirname, "annotations_detectron2", sub)
        full = f"ade20k_sem_seg_{name}"

        def load(i=image_dir, g=gt_dir, n=full) -> list[dict]:
            md = MetadataCatalog.get(n)
            if md.get("stuff_classes") is None:
                md.stuff_classes = ade20k_classes(dirname)
            return load_sem_seg(g, i, gt_ext="png", image_ext="jpg")

        DatasetCatalog.register(full, _checked(full, (image_dir, gt_dir), load))
        MetadataCatalog.get(full).set(
            image_root=image_dir, sem_seg_root=gt_dir, evaluator_type="sem_seg", ignore_label=255
        )


def _load_shapes_instances(split: str, name: str, root: str) -> list[dict]:
    paths = shapes.prepare_shapes_dataset(split, root)
    return load_coco_json(paths["json_file"], paths["image_root"], name)


def _load_shapes_semantic(split: str, root: str) -> list[dict]:
    paths = shapes.prepare_shapes_dataset(split, root)
    return load_sem_seg(paths["sem_seg_root"], paths["image_root"], gt_ext="png", image_ext="jpg")


def _register_shapes() -> None:
    root = shapes.shapes_cache_dir()
    thing_meta = {
        "thing_classes": list(shapes.SHAPES_CLASSES),
        "thing_colors": [list(c) for c in shapes.SHAPES_COLORS],
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(shapes.SHAPES_CLASSES))},
    }
    kp_meta = {
        "keypoint_names": list(shapes.SHAPES_KEYPOINT_NAMES),
        "keypoint_flip_map": [list(p) for p in shapes.SHAPES_KEYPOINT_FLIP_MAP],
        "keypoint_connection_rules": list(shapes.SHAPES_KEYPOINT_CONNECTION_RULES),
    }
    for split in shapes.SHAPES_SPLITS:
        paths = shapes.shapes_split_paths(root, split)
        load_instances = functools.partial(_load_shapes_instances, split, f"shapes_{split}", root)
        load_keypoints = functools.partial(_load_shapes_instances, split, f"shapes_keypoints_{split}", root)
        load_semantic = functools.partial(_load_shapes_semantic, split, root)
        common = {"json_file": paths["json_file"], "image_root": paths["image_root"]}
        DatasetCatalog.register(f"shapes_{split}", load_instances)
        MetadataCatalog.get(f"shapes_{split}").set(evaluator_type="coco", **common, **thing_meta)
        kp_name = f"shapes_keypoints_{split}"
        DatasetCatalog.register(kp_name, load_keypoints)
        MetadataCatalog.get(kp_name).set(evaluator_type="coco", **common, **thing_meta, **kp_meta)
        DatasetCatalog.register(f"shapes_sem_seg_{split}", load_semantic)
        MetadataCatalog.get(f"shapes_sem_seg_{split}").set(
            evaluator_type="sem_seg",
            image_root=paths["image_root"],
            sem_seg_root=paths["sem_seg_root"],
            stuff_classes=["background", *shapes.SHAPES_CLASSES],
            stuff_colors=[[0, 0, 0], *[list(c) for c in shapes.SHAPES_COLORS]],
            ignore_label=255,
        )


def register_all(root: str | None = None) -> None:
    """Register every built-in dataset under ``root`` (default :func:`datasets_root`). Called at import."""
    root = datasets_root() if root is None else root
    _register_coco(root)
    _register_lvis(root)
    _register_cityscapes(root)
    register_all_cityscapes_panoptic(root)
    _register_voc(root)
    _register_ade20k(root)
    _register_shapes()


if __name__.endswith(".builtin"):
    # Import-time registration (only when imported as part of libdet.data.datasets, never as __main__).
    register_all()
