"""DensePose R-CNN modules: decoder, heads, chart predictors, losses and ROI heads."""

from .chart_loss import DensePoseChartLoss, DensePoseChartWithConfidenceLoss
from .chart_predictor import DensePoseChartPredictor, DensePoseChartWithConfidencePredictor
from .decoder import Decoder
from .deeplab_head import ASPP, DensePoseDeepLabHead, NonLocalBlock2D
from .roi_heads import DensePoseROIHeads, densepose_inference, filter_densepose_proposals
from .v1convx_head import DensePoseV1ConvXHead

__all__ = [
    "ASPP",
    "Decoder",
    "DensePoseChartLoss",
    "DensePoseChartPredictor",
    "DensePoseChartWithConfidenceLoss",
    "DensePoseChartWithConfidencePredictor",
    "DensePoseDeepLabHead",
    "DensePoseROIHeads",
    "DensePoseV1ConvXHead",
    "NonLocalBlock2D",
    "densepose_inference",
    "filter_densepose_proposals",
]
