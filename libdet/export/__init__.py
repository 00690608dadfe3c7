"""Export libdet models for deployment: ``torch.export`` (and AOTInductor), ONNX (run in onnxruntime) and
TorchScript tracing and scripting, with detectron2's ``libdet.export`` names where they apply (``TracingAdapter``,
``flatten``, ``dump_torchscript_IR``, ``scripting_with_instances``, ``STABLE_ONNX_OPSET_VERSION``). Start with :func:`export_model`."""

import warnings  # noqa: F401  (detectron2's libdet.export exposes it; kept for `s/detectron2/libdet/` ports)

from . import flatten, torchscript, torchscript_patch
from .api import EXPORT_FORMATS, STABLE_ONNX_OPSET_VERSION, ExportedModel, batch_images, export_model, load_exported
from .compare import ExportDiff, compare_to_eager
from .config import add_export_config
from .deployable import (
    DeployableDenseDetector,
    DeployableGeneralizedRCNN,
    DeployableModel,
    DeployablePanopticFPN,
    DeployableSemanticSegmentor,
    deployable_model,
)
from .flatten import TracingAdapter, flatten_to_tuple
from .fold import fold_frozen_batchnorm
from .onnxruntime_ops import onnxruntime_ops_library, register_onnxruntime_ops
from .postprocess import outputs_to_instances
from .torchscript import dump_torchscript_IR, scripting_with_instances
