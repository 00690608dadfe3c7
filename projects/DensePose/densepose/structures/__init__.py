"""DensePose structures: box-relative chart annotations and chart predictor outputs."""

from .chart_output import DensePoseChartPredictorOutput
from .data_relative import (
    DENSEPOSE_KEYS,
    MASK_LABEL_SYMMETRIES,
    POINT_LABEL_SYMMETRIES,
    DensePoseDataRelative,
    DensePoseList,
    DensePoseTransformData,
)

__all__ = [
    "DENSEPOSE_KEYS",
    "MASK_LABEL_SYMMETRIES",
    "POINT_LABEL_SYMMETRIES",
    "DensePoseChartPredictorOutput",
    "DensePoseDataRelative",
    "DensePoseList",
    "DensePoseTransformData",
]
