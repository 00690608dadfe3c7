"""DensePose R-CNN R50-FPN (DeepLab head) with confidence estimation, "WC2" (detectron2's
``densepose_rcnn_R_50_FPN_DL_WC2_s1x``): UV confidence ``indep_aniso``; the U/V
losses become the Gaussian NLL (point weight 0.0005) and gradients are clipped to norm 1."""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `densepose` package on sys.path: keep it first)

# isort: split


from densepose.modeling import DensePoseChartWithConfidenceLoss, DensePoseChartWithConfidencePredictor

from libdet.config import LazyCall as L
from libdet.engine.optimizer_step import ClipGradNorm

from .densepose_rcnn_R_50_FPN_DL_s1x import model, train

model.roi_heads.densepose_predictor._target_ = DensePoseChartWithConfidencePredictor
model.roi_heads.densepose_predictor.update(uv_confidence="indep_aniso", segm_confidence=False, segm_epsilon=0.01)
model.roi_heads.densepose_loss = L(DensePoseChartWithConfidenceLoss)(
    uv_confidence="indep_aniso",
    uv_epsilon=0.01,
    heatmap_size=112,
    w_points=0.0005,
    w_part=1.0,
    w_segm=5.0,
    num_coarse_segm_channels=2,
)
train.grad_transforms = [L(ClipGradNorm)(max_norm=1.0)]
train.output_dir = "./output/densepose_rcnn_R_50_FPN_DL_WC2_s1x"
