"""DensePose R-CNN R101-FPN, s1x (detectron2's ``densepose_rcnn_R_101_FPN_s1x``): the R50 config with ResNet-101."""

from .densepose_rcnn_R_50_FPN_s1x import model, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/densepose_rcnn_R_101_FPN_s1x"
