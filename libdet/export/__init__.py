"""Export libdet models for deployment: ``torch.export`` (and AOTInductor), ONNX (run in onnxruntime) and
TorchScript tracing, with detectron2's ``libdet.export`` names where they apply (``TracingAdapter``,
``flatten``, ``dump_torchscript_IR``, ``STABLE_ONNX_OPSET_VERSION``). Start with :func:`export_model`."""

from . import flatten, torchscript
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
from .postprocess import outputs_to_instances
from .torchscript import dump_torchscript_IR
