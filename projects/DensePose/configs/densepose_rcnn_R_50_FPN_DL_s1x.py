"""DensePose R-CNN R50-FPN with the DeepLab head (detectron2's ``densepose_rcnn_R_50_FPN_DL_s1x``): ASPP (rates
6, 12, 56) and 8 x 3x3 conv 512 with GroupNorm instead of the V1ConvX head; no non-local block."""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `densepose` package on sys.path: keep it first)

# isort: split


from densepose.modeling import DensePoseDeepLabHead

from libdet.config import LazyCall as L

from .densepose_rcnn_R_50_FPN_s1x import model, train

model.roi_heads.densepose_head = L(DensePoseDeepLabHead)(
    in_channels="${..decoder.num_classes}",
    num_stacked_convs=8,
    conv_head_dim=512,
    conv_head_kernel=3,
    norm="GN",
    nonlocal_on=False,
)
train.output_dir = "./output/densepose_rcnn_R_50_FPN_DL_s1x"
