"""Helpers for tests of libdet models and structures (detectron2's ``utils.testing``).

Imports of models, structures and data happen inside the functions: ``utils`` serves every package.
"""

from __future__ import annotations

import io
import os
import unittest
from typing import Any

import numpy as np
import torch

__all__ = [
    "assert_instances_allclose",
    "convert_scripted_instances",
    "get_model_no_weights",
    "get_sample_coco_image",
    "has_dynamic_axes",
    "min_torch_version",
    "random_boxes",
    "register_custom_op_onnx_export",
    "reload_script_model",
    "skipIfOnCPUCI",
    "skipIfUnsupportedMinOpsetVersion",
    "skipIfUnsupportedMinTorchVersion",
    "unregister_custom_op_onnx_export",
]

SAMPLE_COCO_IMAGE_URL = "http://images.cocodataset.org/train2017/000000000009.jpg"


def get_model_no_weights(config_path: str) -> torch.nn.Module:
    """Build the model of a built-in config (``"COCO/mask_rcnn_R_50_FPN_1x.py"`` or a YAML name) with random
    initialisation, loading no checkpoint. YAML configs are built on the CPU when no GPU is present."""
    from libdet import model_zoo
    from libdet.config import instantiate

    cfg = model_zoo.get_config(config_path)
    if hasattr(cfg, "MODEL"):  # a YAML (CfgNode) config
        from libdet.modeling import build_model

        if not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        return build_model(cfg)
    return instantiate(cfg.model)


def random_boxes(num_boxes: int, max_coord: int = 100, device: str | torch.device = "cpu") -> torch.Tensor:
    """(num_boxes, 4) random valid ``(x0, y0, x1, y1)`` boxes: corners in ``[1, max_coord / 2]``, widths and
    heights in ``[1, max_coord / 2]`` (never degenerate, which box regression tests need)."""
    boxes = torch.rand(num_boxes, 4, device=device) * (max_coord * 0.5)
    boxes.clamp_(min=1.0)
    boxes[:, 2:] += boxes[:, :2]  # x1 = x0 + w, y1 = y0 + h
    return boxes


def get_sample_coco_image(tensor: bool = True) -> torch.Tensor | np.ndarray:
    """A real COCO image in BGR: the first image of the registered ``coco_2017_val_100`` when that dataset is
    under the datasets root, else COCO's ``000000000009.jpg`` fetched through ``PathManager`` (and cached).

    Args:
        tensor: return a (3, H, W) uint8 tensor; else an (H, W, 3) uint8 array.

    Raises:
        RuntimeError: neither the local dataset nor the download is available (names both).
    """
    from libdet.data import DatasetCatalog
    from libdet.data.detection_utils import read_image
    from libdet.utils.file_io import PathManager

    try:
        file_name = DatasetCatalog.get("coco_2017_val_100")[0]["file_name"]
        if not PathManager.exists(file_name):
            raise FileNotFoundError(file_name)
    except (OSError, KeyError, ValueError, IndexError) as local_error:
        try:
            file_name = PathManager.get_local_path(SAMPLE_COCO_IMAGE_URL)
        except Exception as e:  # network errors come in many types
            raise RuntimeError(
                f"get_sample_coco_image: dataset 'coco_2017_val_100' is unavailable ({local_error}) and "
                f"{SAMPLE_COCO_IMAGE_URL} could not be fetched ({type(e).__name__}: {e})."
            ) from e
    image = read_image(file_name, format="BGR")
    if tensor:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return image


def convert_scripted_instances(instances: Any) -> Any:
    """A regular :class:`~libdet.structures.Instances` with the fields of ``instances``.

    Accepts the classes that TorchScript-compatible ``Instances`` are compiled to (fields in private
    ``_<name>`` attributes, listed by ``_field_names``; unset optional fields are ``None``) and regular
    ``Instances`` (copied).
    """
    from libdet.structures import Instances

    if not hasattr(instances, "image_size"):
        raise TypeError(f"convert_scripted_instances: expected an Instances object, got {type(instances).__name__}.")
    ret = Instances(instances.image_size)
    if isinstance(instances, Instances):
        for name, value in instances.get_fields().items():
            ret.set(name, value)
        return ret
    for name in instances._field_names:
        value = getattr(instances, "_" + name, None)
        if value is not None:
            ret.set(name, value)
    return ret


def assert_instances_allclose(
    input: Any, other: Any, *, rtol: float = 1e-5, msg: str = "", size_as_tensor: bool = False
):
    """Assert that two ``Instances`` (regular or scripted) have the same image size, fields and close values.

    Float tensors must agree within ``rtol`` times the largest magnitude of ``input``'s field; boxes and
    ``ROIMasks`` (coordinates of order 100) within ``100 * rtol``; other tensors exactly.

    Args:
        size_as_tensor: compare image sizes as tensors (traced models return them as tensors).

    Raises:
        AssertionError: naming the first field that differs, prefixed by ``msg``.
        ValueError: a field of a type this function cannot compare.
    """
    from libdet.structures import Boxes, Instances, ROIMasks

    if not isinstance(input, Instances):
        input = convert_scripted_instances(input)
    if not isinstance(other, Instances):
        other = convert_scripted_instances(other)
    msg = msg.rstrip() + " " if msg else "Two Instances are different! "
    size_message = f"{msg}image_size is {input.image_size} vs. {other.image_size}!"
    if size_as_tensor:
        assert torch.equal(torch.as_tensor(input.image_size), torch.as_tensor(other.image_size)), size_message
    else:
        assert tuple(input.image_size) == tuple(other.image_size), size_message
    fields, fields_other = sorted(input.get_fields()), sorted(other.get_fields())
    assert fields == fields_other, f"{msg}Fields are {fields} vs {fields_other}!"
    for name in fields:
        a, b = input.get(name), other.get(name)
        if isinstance(a, (Boxes, ROIMasks)):
            assert a.tensor.shape == b.tensor.shape and torch.allclose(a.tensor, b.tensor, atol=100 * rtol), (
                f"{msg}Field {name} differs too much!"
            )
        elif isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor) and a.shape == b.shape, f"{msg}Field {name} has different shapes!"
            if a.dtype.is_floating_point:
                magnitude = a.abs().max().item() if a.numel() else 0.0
                assert torch.allclose(a, b, rtol=0.0, atol=magnitude * rtol), f"{msg}Field {name} differs too much!"
            else:
                assert torch.equal(a, b), f"{msg}Field {name} is different!"
        else:
            raise ValueError(f"assert_instances_allclose: cannot compare field {name!r} of type {type(a).__name__}.")


def reload_script_model(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Save a scripted or traced module to memory and load it back, as a deployment would."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def min_torch_version(min_version: str) -> bool:
    """Whether the installed torch is at least ``min_version`` (e.g. ``"2.1"``)."""
    return torch.__version__ >= min_version  # a TorchVersion: compares as a version, not as text


def has_dynamic_axes(onnx_model: Any) -> bool:
    """Whether every input and output of an ``onnx.ModelProto`` has only symbolic (dynamic) dimensions."""
    values = list(onnx_model.graph.input) + list(onnx_model.graph.output)
    return all(
        dim.dim_param != "" and dim.dim_value == 0 for value in values for dim in value.type.tensor_type.shape.dim
    )


skipIfOnCPUCI = unittest.skipIf(
    bool(os.environ.get("CI")) and not torch.cuda.is_available(),
    "too slow on CPU-only CI; runs where a GPU is present",
)
"""Skip a (slow) test on CI machines without a GPU."""


def skipIfUnsupportedMinTorchVersion(min_version: str):
    """Decorator: skip the test when torch is older than ``min_version``."""
    return unittest.skipIf(not min_torch_version(min_version), f"needs torch >= {min_version}")


def skipIfUnsupportedMinOpsetVersion(min_opset_version: int, current_opset_version: int | None = None):
    """Decorator: skip the test when the ONNX opset in use (default libdet's ``STABLE_ONNX_OPSET_VERSION``) is
    older than ``min_opset_version``."""
    if current_opset_version is None:
        from libdet.export import STABLE_ONNX_OPSET_VERSION

        current_opset_version = STABLE_ONNX_OPSET_VERSION
    return unittest.skipIf(
        current_opset_version < min_opset_version,
        f"needs ONNX opset >= {min_opset_version}, the current one is {current_opset_version}",
    )


def register_custom_op_onnx_export(opname: str, symbolic_fn: Any, opset_version: int, min_version: str) -> None:
    """Register ``symbolic_fn`` as the ONNX export of ``opname`` (``"namespace::op"``) at ``opset_version``, only
    on torch older than ``min_version`` (where torch lacks the export); newer torch keeps its own."""
    if min_torch_version(min_version):
        return
    torch.onnx.register_custom_op_symbolic(opname, symbolic_fn, opset_version)


def unregister_custom_op_onnx_export(opname: str, opset_version: int, min_version: str) -> None:
    """Undo :func:`register_custom_op_onnx_export` (a no-op on torch ``>= min_version``)."""
    if min_torch_version(min_version):
        return
    torch.onnx.unregister_custom_op_symbolic(opname, opset_version)
