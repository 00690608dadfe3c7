"""Datasets, mappers, samplers and loaders (names follow ``detectron2.data``).

``libdet.data.datasets`` registers the built-in datasets when imported (names only; no file is read).
"""

from . import (
    build,  # noqa: E402  (after the names above, so `build` is the module)
    catalog,
    common,
    dataset_mapper,
    datasets,  # registers the built-in dataset names; reads no file
    detection_utils,
    errors,
    samplers,
    transforms,
    validation,
)
from .build import (
    TrainDataLoader,
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .errors import AnnotationError, DataError, ImageNotFoundError, ImageReadError, SizeMismatchError

__all__ = [
    "AnnotationError",
    "DataError",
    "ImageNotFoundError",
    "ImageReadError",
    "SizeMismatchError",
    "DatasetCatalog",
    "DatasetFromList",
    "DatasetMapper",
    "MapDataset",
    "Metadata",
    "MetadataCatalog",
    "ToIterableDataset",
    "TrainDataLoader",
    "build",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "catalog",
    "common",
    "dataset_mapper",
    "datasets",
    "detection_utils",
    "errors",
    "get_detection_dataset_dicts",
    "load_proposals_into_dataset",
    "print_instances_class_histogram",
    "samplers",
    "transforms",
    "validation",
]
