"""Static int8 quantization of ONNX exports with onnxruntime (``quantize_static``, QDQ format), and a
predictor that runs an exported file on detectron2-style batches so that it can be evaluated like the model.

The input is a folder written by ``libdet.export.export_model(..., format="onnx")`` (``model.onnx`` and its
``export_info.json``); the output is a folder of the same layout, so ``libdet.export.load_exported`` and
``tools/deploy/run_onnx.py`` run the quantized file as they run the float one. Calibration feeds whole images
(0-255, the exported model's input) through onnxruntime, so every quantized tensor's range comes from the
data the deployed model sees.

Needs onnxruntime (``pip install 'libdet[export]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from libdet.export import ExportedModel, load_exported
from libdet.export.onnxruntime_ops import ONNX_DOMAIN, onnxruntime_ops_library, use_libdet_roi_align_in_file
from libdet.structures import Instances

__all__ = ["DEFAULT_ONNX_OP_TYPES", "ExportedPredictor", "ImageCalibrationReader", "quantize_onnx"]

#: Operators quantized by default. Convolutions carry the backbone, FPN, RPN head and mask head; the box
#: head's fully connected layers (Gemm / MatMul) feed the final scores and box deltas, where int8 rounding
#: costs AP for a small share of the time.
DEFAULT_ONNX_OP_TYPES: tuple[str, ...] = ("Conv",)


def _image_tensor(item: torch.Tensor | dict[str, Any]) -> torch.Tensor:
    image = item["image"] if isinstance(item, dict) else item
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4:
        raise ValueError(f"calibration image: expected (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}.")
    return image.float()


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over images: one ``{"images": (1, C, H, W) float32}`` feed per
    image (images of different sizes cannot share a batch).

    Args:
        images: ``(C, H, W)`` 0-255 tensors in the model's input format, or detectron2-style dicts with
            ``"image"`` (e.g. from a test data loader, flattened), or ``(N, C, H, W)`` batches.
        input_name: the model's input name (``"images"`` for libdet exports).
    """

    def __init__(self, images: Iterable[torch.Tensor | dict[str, Any]], input_name: str = "images"):
        self.input_name = input_name
        self._feeds = [_image_tensor(x).numpy() for x in images]
        if not self._feeds:
            raise ValueError("ImageCalibrationReader: no calibration image given.")
        self._next = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return {self.input_name: self._feeds[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self._feeds)


def quantize_onnx(
    exported_dir: str | os.PathLike,
    calib_images: Iterable[torch.Tensor | dict[str, Any]],
    output_dir: str | os.PathLike,
    op_types: Sequence[str] = DEFAULT_ONNX_OP_TYPES,
    per_channel: bool = True,
    onnx_custom_ops: bool = False,
) -> ExportedModel:
    """Quantize ``<exported_dir>/model.onnx`` to int8 (QDQ: uint8 activations, int8 weights, MinMax ranges)
    into ``<output_dir>/model.onnx`` (written atomically) with a copy of its ``export_info.json``.

    Args:
        exported_dir: folder written by ``export_model(..., format="onnx")``.
        calib_images: images for calibration (see :class:`ImageCalibrationReader`).
        output_dir: folder for the quantized model (created if needed; must differ from ``exported_dir``).
        op_types: ONNX operator types to quantize (see :data:`DEFAULT_ONNX_OP_TYPES`).
        per_channel: one weight scale per output channel (more accurate than one per tensor).
        onnx_custom_ops: run the quantized model's RoIAlign with libdet's onnxruntime op
            (:func:`~libdet.export.onnxruntime_ops.use_libdet_roi_align`); quantize a standard export (its float
            ``RoiAlign`` is replaced after quantization).

    Returns:
        the quantized model loaded with ``load_exported``.

    Raises:
        FileNotFoundError: if ``model.onnx`` or ``export_info.json`` is missing in ``exported_dir``.
        RuntimeError: if onnxruntime is not installed.
    """
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise RuntimeError("quantize_onnx: needs onnxruntime: pip install 'libdet[export]'.") from e
    src_dir, out_dir = Path(exported_dir), Path(output_dir)
    src, info = src_dir / "model.onnx", src_dir / "export_info.json"
    for path in (src, info):
        if not path.is_file():
            raise FileNotFoundError(f"quantize_onnx: {path} is missing (write it with export_model(format='onnx')).")
    if out_dir.resolve() == src_dir.resolve():
        raise ValueError(f"quantize_onnx: output_dir must differ from exported_dir ({src_dir}).")
    if json.loads(info.read_text()).get("onnx_custom_ops"):
        raise ValueError(
            f"quantize_onnx: {src} uses libdet's onnxruntime ops, which onnxruntime's quantizer cannot run; "
            "quantize a standard export and pass onnx_custom_ops=True here instead."
        )
    if onnx_custom_ops:
        onnxruntime_ops_library()  # fails early, naming what is missing, before the calibration runs
    reader = ImageCalibrationReader(calib_images)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".quantize_") as tmp:
        # Shape inference and graph optimisation first, as onnxruntime recommends: it lets the quantizer see
        # the tensor shapes and fold what the exporter left unfused.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "model.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        meta = json.loads(info.read_text())
        if onnx_custom_ops and use_libdet_roi_align_in_file(quantized):
            meta["onnx_custom_ops"] = ONNX_DOMAIN
        meta["quantization"] = {
            "method": "onnxruntime.quantize_static",
            "format": "QDQ",
            "activations": "uint8",
            "weights": "int8 per channel" if per_channel else "int8 per tensor",
            "op_types": list(op_types),
            "calibration_images": len(reader),
        }
        (Path(tmp) / "export_info.json").write_text(json.dumps(meta, indent=2))
        # The info file first: a reader that sees the new model.onnx also sees its info.
        os.replace(Path(tmp) / "export_info.json", out_dir / "export_info.json")
        os.replace(quantized, out_dir / "model.onnx")
    for extra in src_dir.glob("model.onnx.data"):  # external weights, if the exporter wrote them separately
        shutil.copy(extra, out_dir / extra.name)
    return load_exported(out_dir / "model.onnx")


class ExportedPredictor:
    """Runs an :class:`~libdet.export.ExportedModel` on detectron2-style batches and returns what the eager
    model's inference returns: per input, ``{"instances": Instances}`` at the original image size
    (``"height"`` / ``"width"`` of the input dict; boxes scaled and clipped, masks resized). Images run one
    at a time, so that the inputs of a batch may differ in size. Use it with ``inference_on_dataset``.
    """

    def __init__(self, exported: ExportedModel):
        self.exported = exported

    def __call__(self, batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        for inputs in batch:
            image = _image_tensor(inputs)
            height, width = int(inputs.get("height", image.shape[2])), int(inputs.get("width", image.shape[3]))
            result = self.exported.predict(image)[0]
            results.append({"instances": _rescale(result["instances"], height, width)})
        return results


def _rescale(instances: Instances, height: int, width: int) -> Instances:
    """Detections at the network input size → at ``(height, width)``."""
    in_h, in_w = instances.image_size
    out = Instances((height, width))
    boxes = instances.pred_boxes.clone()
    boxes.scale(width / in_w, height / in_h)
    boxes.clip((height, width))
    out.pred_boxes = boxes
    out.scores = instances.scores
    out.pred_classes = instances.pred_classes
    if instances.has("pred_masks"):
        masks = instances.pred_masks.float()
        if len(masks) and (in_h, in_w) != (height, width):
            masks = F.interpolate(masks[:, None], size=(height, width), mode="nearest")[:, 0]
        out.pred_masks = masks.reshape(-1, height, width) > 0.5
    return out[boxes.nonempty()]
