"""Int8 post-training quantization that keeps AP: PT2E static quantization of the backbone (torchao's
``X86InductorQuantizer``, compiled by Inductor) and onnxruntime static quantization of ONNX exports.
See ``docs/quantization.md`` and ``tools/deploy/quantize.py``. The optional packages (torchao, onnxruntime)
are imported by the functions that need them."""

from .fold import PlainConv2d, fold_conv_norms
from .onnx import DEFAULT_ONNX_OP_TYPES, ExportedPredictor, ImageCalibrationReader, quantize_onnx
from .pt2e import (
    QuantizedBackbone,
    load_quantized_backbone,
    quantize_backbone_pt2e,
    quantize_pt2e,
    record_backbone_inputs,
    save_quantized_backbone,
)
