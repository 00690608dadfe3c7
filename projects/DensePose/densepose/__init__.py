"""DensePose (Güler et al., CVPR 2018) on libdet: dense human pose as IUV charts, with detectron2's model-zoo
layouts. Importing this package registers the DensePose COCO datasets and the synthetic DensePose set."""

from . import data  # noqa: F401  (registers the datasets)
from .modeling import *  # noqa: F401,F403
from .structures import *  # noqa: F401,F403
