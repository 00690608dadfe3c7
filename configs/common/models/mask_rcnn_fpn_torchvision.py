"""``mask_rcnn_fpn.py`` set up like torchvision's ``maskrcnn_resnet50_fpn``, to run its weights in libdet::

    model = instantiate(LazyConfig.load("configs/common/models/mask_rcnn_fpn_torchvision.py").model)
    load_torchvision_maskrcnn(model, torchvision_model.state_dict())  # libdet.checkpoint.torchvision_conversion

Images are RGB in [0, 255] (torchvision's [0, 1] input times 255), normalised by ImageNet mean / std; the
ResNet puts each block's stride in its 3x3 conv; ROIAlign is torchvision's ``aligned=False`` with 2 samples
per bin; 90 classes (torchvision's 91 less the background); RPN proposals under 1e-3 px are dropped.
The model does not resize: give it torchvision's resized image (min side 800, max side 1333).
"""

from .mask_rcnn_fpn import model

model.backbone.bottom_up.stages.stride_in_1x1 = False
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.proposal_generator.min_box_size = 1e-3
model.roi_heads.num_classes = 90
model.roi_heads.box_pooler.update(pooler_type="ROIAlign", sampling_ratio=2)
model.roi_heads.mask_pooler.update(pooler_type="ROIAlign", sampling_ratio=2)
