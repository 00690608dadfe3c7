"""DensePose data: mapper, dataset registration (COCO DensePose splits, the synthetic set)."""

from .datasets import (
    DENSEPOSE_COCO_SPLITS,
    default_evaluation_asset_path,
    default_uv_symmetries_path,
    load_densepose_coco_json,
    register_densepose_coco,
)
from .mapper import DensePoseDatasetMapper
from .synthetic import (
    generate_synthetic_densepose,
    prepare_synthetic_densepose,
    register_synthetic_densepose,
    synthetic_uv_symmetries_path,
)

register_densepose_coco()
register_synthetic_densepose()

__all__ = [
    "DENSEPOSE_COCO_SPLITS",
    "DensePoseDatasetMapper",
    "default_evaluation_asset_path",
    "default_uv_symmetries_path",
    "generate_synthetic_densepose",
    "load_densepose_coco_json",
    "prepare_synthetic_densepose",
    "register_densepose_coco",
    "register_synthetic_densepose",
    "synthetic_uv_symmetries_path",
]
