"""DensePose COCO datasets under detectron2's names and paths (relative to ``$LIBDET_DATASETS``, default
``datasets``): ``coco/annotations/densepose_*2014.json`` with the COCO 2014 images."""

from __future__ import annotations

import functools
import os

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets.builtin import datasets_root
from libdet.data.datasets.coco import load_coco_json

from ..structures import DENSEPOSE_KEYS

__all__ = [
    "DENSEPOSE_COCO_SPLITS",
    "register_densepose_coco",
    "load_densepose_coco_json",
    "default_uv_symmetries_path",
    "default_evaluation_asset_path",
]

#: name -> (image folder, annotation json), relative to the datasets root.
DENSEPOSE_COCO_SPLITS = {
    "densepose_coco_2014_train": ("coco/train2014", "coco/annotations/densepose_train2014.json"),
    "densepose_coco_2014_minival": ("coco/val2014", "coco/annotations/densepose_minival2014.json"),
    "densepose_coco_2014_minival_100": ("coco/val2014", "coco/annotations/densepose_minival2014_100.json"),
    "densepose_coco_2014_valminusminival": ("coco/val2014", "coco/annotations/densepose_valminusminival2014.json"),
}


def default_uv_symmetries_path() -> str:
    """Where the COCO configs look for detectron2's ``UV_symmetry_transforms.mat`` (not bundled):
    ``$LIBDET_DATASETS/densepose/UV_symmetry_transforms.mat``."""
    return os.path.join(datasets_root(), "densepose", "UV_symmetry_transforms.mat")


def default_evaluation_asset_path(file_name: str) -> str:
    """Where the COCO configs look for detectron2's DensePose evaluation assets (not bundled): ``SMPL_subdiv.mat``,
    ``SMPL_SUBDIV_TRANSFORM.mat``, ``Pdist_matrix.pkl`` under ``$LIBDET_DATASETS/densepose/``."""
    return os.path.join(datasets_root(), "densepose", file_name)


def load_densepose_coco_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """:func:`load_coco_json` keeping the DensePose keys of each annotation (a person without them has none)."""
    for path in (json_file, image_root):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"DensePose dataset {dataset_name!r} needs {path!r}, which does not exist (datasets are looked up "
                f"under $LIBDET_DATASETS, now {os.getenv('LIBDET_DATASETS', 'unset: ./datasets')!r})."
            )
    return load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=list(DENSEPOSE_KEYS))


def _register(name: str, image_root: str, json_file: str, **metadata) -> None:
    if name in DatasetCatalog.list():
        return
    DatasetCatalog.register(name, functools.partial(load_densepose_coco_json, json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="densepose", thing_classes=["person"], **metadata
    )


def register_densepose_coco(root: str | None = None) -> None:
    """Register the splits of :data:`DENSEPOSE_COCO_SPLITS` (nothing is read until a split is used)."""
    root = datasets_root() if root is None else root
    for name, (image_dir, json_rel) in DENSEPOSE_COCO_SPLITS.items():
        _register(name, os.path.join(root, image_dir), os.path.join(root, json_rel))
