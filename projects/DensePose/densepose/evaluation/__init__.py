"""DensePose evaluation: GPS / GPSm / mask-IoU AP on COCO-style DensePose annotations."""

from .densepose_coco_evaluation import DENSEPOSE_METRICS, DensePoseCOCOEvaluator, evaluate_densepose, gps_of_pair
from .geodesic import (
    COARSE_PARTS,
    MEAN_DISTANCES,
    ChartGeodesicDistances,
    SMPLGeodesicDistances,
    gps_normalizers,
    synthetic_geodesic_distances,
)

__all__ = [
    "COARSE_PARTS",
    "DENSEPOSE_METRICS",
    "MEAN_DISTANCES",
    "ChartGeodesicDistances",
    "DensePoseCOCOEvaluator",
    "SMPLGeodesicDistances",
    "evaluate_densepose",
    "gps_normalizers",
    "gps_of_pair",
    "synthetic_geodesic_distances",
]
