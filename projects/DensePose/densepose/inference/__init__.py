"""DensePose inference helpers: converters of predictor outputs, flip TTA, drawing."""

from .converters import DensePoseChartResult, chart_output_to_masks, chart_output_to_results, hflip_chart_output
from .tta import DensePoseHFlipTTA
from .visualize import VISUALIZATIONS, draw_densepose

__all__ = [
    "VISUALIZATIONS",
    "DensePoseChartResult",
    "DensePoseHFlipTTA",
    "chart_output_to_masks",
    "chart_output_to_results",
    "draw_densepose",
    "hflip_chart_output",
]
