"""One front door for exporting a libdet model, and one loader that runs any exported file.

Formats (``EXPORT_FORMATS``):

- ``"torch_export"``: a ``torch.export`` ExportedProgram (dynamic batch size, height and width where the
  model allows it), saved with ``torch.export.save`` as ``model.pt2``;
- ``"aot_inductor"``: that program compiled ahead of time by AOTInductor into ``model_aoti.pt2`` (needs a
  C++ compiler);
- ``"onnx"``: ``model.onnx`` from the dynamo-based ONNX exporter (``pip install libdet[export]``), run
  with onnxruntime;
- ``"torchscript"``: ``model.ts``, a ``torch.jit.trace`` of the deployable model (the size-dependent
  steps are scripted, so it runs on any image size).

Every format exports the deployable form of the model (:func:`deployable_model`), with its frozen norms
folded into the convolutions (:func:`fold_frozen_batchnorm`): a batch ``(N, C, H, W)`` of 0-255 images in,
flat tensors out. An ``export_info.json`` next to the file names the outputs and holds what post-processing
needs, so :func:`load_exported` runs the file on its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .deployable import DeployableModel, deployable_model
from .fold import fold_frozen_batchnorm
from .onnxruntime_ops import (
    ONNX_DOMAIN,
    onnxruntime_ops_library,
    register_onnxruntime_ops,
    use_libdet_roi_align_in_file,
)
from .ops import nms_allowing_empty_output
from .postprocess import outputs_to_instances

__all__ = [
    "EXPORT_FORMATS",
    "STABLE_ONNX_OPSET_VERSION",
    "ExportedModel",
    "export_model",
    "load_exported",
    "batch_images",
]

EXPORT_FORMATS: tuple[str, ...] = ("torch_export", "aot_inductor", "onnx", "torchscript")
#: ONNX opset of the files libdet writes (``RoiAlign`` with ``coordinate_transformation_mode`` needs >= 16).
STABLE_ONNX_OPSET_VERSION = 18
_FILE_NAMES = {
    "torch_export": "model.pt2",
    "aot_inductor": "model_aoti.pt2",
    "onnx": "model.onnx",
    "torchscript": "model.ts",
}
_INFO_FILE = "export_info.json"

logger = logging.getLogger(__name__)


def batch_images(inputs: torch.Tensor | Sequence[dict[str, Any]] | Sequence[torch.Tensor]) -> torch.Tensor:
    """A ``(N, C, H, W)`` float batch from a tensor, a list of ``(C, H, W)`` tensors, or detectron2-style
    inputs (a list of dicts with ``"image"``); all images must have the same size.

    Raises:
        ValueError: for images of different sizes or a wrong number of dimensions.
    """
    if isinstance(inputs, torch.Tensor):
        images = inputs[None] if inputs.dim() == 3 else inputs
    else:
        tensors = [x["image"] if isinstance(x, dict) else x for x in inputs]
        if not tensors:
            raise ValueError("batch_images: no images given.")
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(
                f"batch_images: the images of one exported batch must have the same size, got shapes {sorted(shapes)}."
            )
        images = torch.stack(tensors)
    if images.dim() != 4:
        raise ValueError(f"batch_images: expected (N, C, H, W) images, got shape {tuple(images.shape)}.")
    return images.float()


@dataclass
class ExportedModel:
    """An exported model loaded for inference: ``__call__(images) -> dict[name, Tensor]``.

    Attributes:
        format: one of :data:`EXPORT_FORMATS`.
        path: the exported file.
        output_names: names of the outputs, in order.
        info: the content of ``export_info.json`` (model class, input format, post-processing settings).
    """

    format: str
    path: Path
    output_names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    _runner: Any = None

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run on a ``(N, C, H, W)`` float batch; returns the outputs by name (CPU tensors for onnxruntime)."""
        images = batch_images(images)
        try:
            if self.format == "onnx":
                outs = self._runner.run(None, {"images": images.detach().cpu().numpy()})
                outs = [torch.from_numpy(o) for o in outs]
            else:
                with torch.no_grad():
                    outs = self._runner(images)
        except Exception as e:  # the runtimes' own errors name neither the file nor the whole input
            raise RuntimeError(
                f"{self.path} ({self.format}) failed on images of shape {tuple(images.shape)}, "
                f"dtype {images.dtype}: {e}"
            ) from e
        if isinstance(outs, torch.Tensor):
            outs = [outs]
        return dict(zip(self.output_names, outs))

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """Run and post-process: per image, ``{"instances": Instances, "sem_seg": ..., "panoptic_seg": ...}``
        as the eager model's inference returns them (at the input size)."""
        images = batch_images(images)
        outputs = self(images)
        return outputs_to_instances(
            outputs, images.shape[0], (images.shape[2], images.shape[3]), panoptic=self.info.get("panoptic")
        )


def _model_info(deployable: DeployableModel, fmt: str) -> dict[str, Any]:
    model = deployable.model
    info: dict[str, Any] = {
        "format": fmt,
        "file": _FILE_NAMES[fmt],
        "model_class": type(model).__name__,
        "output_names": list(deployable.output_names),
        "input": "images: (N, C, H, W) float32, 0-255, channels in input_format",
        "input_format": getattr(model, "input_format", None),
        "size_divisibility": deployable.size_divisibility,
    }
    if hasattr(model, "combine_overlap_thresh"):
        info["panoptic"] = {
            "overlap_threshold": float(model.combine_overlap_thresh),
            "stuff_area_thresh": float(model.combine_stuff_area_thresh),
            "instances_score_thresh": float(model.combine_instances_score_thresh),
        }
    return info


def _dynamic_shapes(dynamic: bool):
    if not dynamic:
        return None
    auto = torch.export.Dim.AUTO
    return {"images": {0: auto, 2: auto, 3: auto}}


def _export_sample(images: torch.Tensor, dynamic: bool) -> torch.Tensor:
    """torch.export specialises a dimension whose sample size is 0 or 1: a dynamic batch needs 2 images."""
    if dynamic and images.shape[0] == 1:
        return torch.cat([images, images])
    return images


def _size_oblivious(dynamic: bool):
    """Size-oblivious reasoning on the input sizes (for a dynamic export): without it torch.export
    specialises any size that is 1 in the sample (a 1 x 1 RetinaNet p7 map fixes the image size to <= 128 px)
    or guards on it not being 1 (a p5 map of height 1 fails), so that sizes a real image can have would be
    refused. AOTInductor's compilation needs it as well (see :func:`_export`)."""
    from torch.fx.experimental import _config as fx_config

    oblivious = {"backed_size_oblivious": True} if dynamic and hasattr(fx_config, "backed_size_oblivious") else {}
    return fx_config.patch(**oblivious)


def _torch_export(deployable: DeployableModel, images: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    images = _export_sample(images, dynamic)
    with torch.no_grad(), _size_oblivious(dynamic):
        return torch.export.export(deployable, (images,), dynamic_shapes=_dynamic_shapes(dynamic), strict=False)


def _write_atomically(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path``, so that a failed export leaves no partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_model(
    model: nn.Module,
    sample_inputs: torch.Tensor | Sequence[dict[str, Any]],
    format: str,
    output_dir: str | os.PathLike,
    dynamic: bool = True,
    onnx_custom_ops: bool = False,
) -> ExportedModel:
    """Export ``model`` (in eval mode) and load the result back.

    Args:
        model: a libdet model (see :func:`deployable_model` for the supported ones) or a deployable one.
        sample_inputs: a ``(N, C, H, W)`` batch, ``(C, H, W)`` image, or detectron2-style list of dicts
            with ``"image"``; it traces the model, so it should give detections.
        format: one of :data:`EXPORT_FORMATS`.
        output_dir: folder for the exported file and ``export_info.json`` (created if needed).
        dynamic: export with dynamic batch size, height and width (``torch_export``, ``aot_inductor``,
            ``onnx``; a traced TorchScript model is always size-generic).
        onnx_custom_ops: (``onnx`` only) write RoIAlign as libdet's onnxruntime op ``libdet.RoiAlign``, 4-6x
            faster than onnxruntime's own (see :mod:`libdet.export.onnxruntime_ops`); the file then runs only
            in onnxruntime with libdet's op library registered, which :func:`load_exported` does.

    Returns:
        the loaded :class:`ExportedModel`.

    Raises:
        ValueError: for an unknown format.
        NotImplementedError: for an unsupported model.
        RuntimeError: when the format needs what is missing (e.g. ``onnx`` without onnxscript, or
            ``onnx_custom_ops`` without onnxruntime's C++ headers).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export_model: unknown format {format!r}; expected one of {EXPORT_FORMATS}.")
    if onnx_custom_ops and format != "onnx":
        raise ValueError(f"export_model: onnx_custom_ops=True applies to format 'onnx' only, not {format!r}.")
    if onnx_custom_ops:
        try:  # before the export: the exported file is loaded back, which needs the library
            onnxruntime_ops_library()
        except RuntimeError as e:
            raise RuntimeError(f"export_model: onnx_custom_ops=True: {e}") from e
    # The exported copy holds its frozen norms folded into the convolutions, as eager mode computes them.
    deployable = deployable_model(fold_frozen_batchnorm(model)).eval()
    images = batch_images(sample_inputs)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / _FILE_NAMES[format]

    with nms_allowing_empty_output():
        custom_op_nodes = _export(deployable, images, format, path, dynamic, onnx_custom_ops)
    info = _model_info(deployable, format)
    if custom_op_nodes:
        info["onnx_custom_ops"] = ONNX_DOMAIN
    elif onnx_custom_ops:
        logger.warning("export_model: %s has no RoIAlign; onnx_custom_ops=True changed nothing.", type(model).__name__)
    _write_atomically(out_dir / _INFO_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    return load_exported(path)


def _export(
    deployable: DeployableModel, images: torch.Tensor, format: str, path: Path, dynamic: bool, onnx_custom_ops: bool
) -> int:
    """Write ``path``; returns the number of libdet custom-op nodes in it (ONNX with ``onnx_custom_ops``)."""
    if format == "torch_export":
        program = _torch_export(deployable, images, dynamic)
        _write_atomically(path, lambda tmp: torch.export.save(program, tmp))
    elif format == "aot_inductor":
        if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
            raise RuntimeError("export_model: format 'aot_inductor' needs a C++ compiler (none found on PATH).")
        program = _torch_export(deployable, images, dynamic)
        from torch._inductor import aoti_compile_and_package

        # Without layout optimisation: with it, AOTInductor (torch 2.15, CPU) computes a transposed convolution
        # after a convolution wrongly when the batch size is data dependent — Mask R-CNN's mask head on the
        # detections gave wrong masks (a 3x3 conv then a 2x2 stride-2 deconv reproduces it).
        configs = {"layout_optimization": False}

        # Compiled size-obliviously too: Inductor traces the program again with a shape environment of its own,
        # which (without the flag) narrows the input ranges to what the sample's map sizes imply (RetinaNet:
        # height and width 65-128 px, p6 2 x 2 and p7 1 x 1 baked into the kernels) and compiles for that range
        # only. The compiled model checks the range only when AOTI_RUNTIME_CHECK_INPUTS=1; otherwise a 130 px
        # image runs those kernels out of bounds and corrupts the heap ("free(): invalid next size"); see
        # pytorch/pytorch#150364 (AOTI does not error when lowering specialises a dynamic shape).
        def compile_to(tmp: str) -> None:
            with _size_oblivious(dynamic):
                aoti_compile_and_package(program, package_path=tmp, inductor_configs=configs)

        _write_atomically(path, compile_to)
    elif format == "onnx":
        return _export_onnx(deployable, images, path, dynamic, onnx_custom_ops)
    else:
        with torch.no_grad():
            traced = torch.jit.trace(deployable, (images,), check_trace=False, strict=False)
        _write_atomically(path, lambda tmp: torch.jit.save(traced, tmp))
    return 0


def _without_runtime_asserts(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Drop the scalar range assertions torch.export adds for data-dependent sizes (e.g. the number of
    NMS survivors). Their bounds can exceed int64, which the ONNX translation cannot represent; the ONNX
    graph needs no such checks."""
    graph = program.graph_module.graph
    assert_ops = {torch.ops.aten._assert_scalar.default, torch.ops.aten.sym_constrain_range_for_size.default}
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in assert_ops:
            graph.erase_node(node)
    # The scalar comparisons that fed them are unused now (dead-code elimination keeps operator.* calls).
    for node in reversed(list(graph.nodes)):
        if (
            node.op == "call_function"
            and not node.users
            and getattr(node.target, "__module__", "") in ("_operator", "operator")
        ):
            graph.erase_node(node)
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    return program


def _export_onnx(deployable: DeployableModel, images: torch.Tensor, path: Path, dynamic: bool, custom_ops: bool) -> int:
    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            "export_model: format 'onnx' needs onnx and onnxscript: pip install 'libdet[export]'."
        ) from e
    program = _without_runtime_asserts(_torch_export(deployable, images, dynamic))
    with torch.no_grad():
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=["images"],
            output_names=list(deployable.output_names),
            opset_version=STABLE_ONNX_OPSET_VERSION,
            optimize=True,
            verbose=False,
        )
    replaced = 0

    def write(tmp: str) -> None:
        nonlocal replaced
        onnx_program.save(tmp)
        if custom_ops:
            replaced = use_libdet_roi_align_in_file(tmp)

    _write_atomically(path, write)
    return replaced


def load_exported(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    custom_ops_library: str | os.PathLike | None = None,
) -> ExportedModel:
    """Load a file written by :func:`export_model` (its ``export_info.json`` must sit next to it).

    Args:
        path: the exported file (``model.pt2``, ``model_aoti.pt2``, ``model.onnx``, ``model.ts``).
        device: where to run the torch formats (onnxruntime runs on its CPU provider).
        custom_ops_library: for an ONNX file with libdet's ops (``onnx_custom_ops=True``), the built
            op library; by default :func:`~libdet.export.onnxruntime_ops.onnxruntime_ops_library` (built on
            first use).

    An AOTInductor package is run with its input checks on (``AOTI_RUNTIME_CHECK_INPUTS=1`` unless the
    environment sets it): an input it was not compiled for raises an error. Any runtime's error on an input
    is raised as a ``RuntimeError`` that names the file and the input's shape.

    Raises:
        FileNotFoundError: if the file or its ``export_info.json`` is missing.
        RuntimeError: for a file with libdet's onnxruntime ops when their library cannot be built.
    """
    path = Path(path)
    info_path = path.parent / _INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"load_exported: no exported model at {path}.")
    if not info_path.is_file():
        raise FileNotFoundError(f"load_exported: {info_path} (written by export_model) is missing next to {path}.")
    info = json.loads(info_path.read_text())
    fmt = next((f for f, name in _FILE_NAMES.items() if name == path.name), info.get("format"))
    if fmt not in EXPORT_FORMATS:
        raise ValueError(
            f"load_exported: cannot tell the format of {path}; expected one of {list(_FILE_NAMES.values())}."
        )
    if fmt == "torch_export":
        runner = torch.export.load(str(path)).module()
        runner = runner.to(device)
    elif fmt == "aot_inductor":
        from torch._inductor import aoti_load_package

        # A compiled package checks its input's dtype, rank and sizes only when this is set (read once, at its
        # first call); unchecked, an input it was not compiled for runs its kernels out of bounds (heap
        # corruption, not an error). An explicit setting of the caller's is kept.
        os.environ.setdefault("AOTI_RUNTIME_CHECK_INPUTS", "1")
        runner = aoti_load_package(str(path))
    elif fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if info.get("onnx_custom_ops") == ONNX_DOMAIN:
            try:
                register_onnxruntime_ops(options, custom_ops_library)
            except RuntimeError as e:
                raise RuntimeError(f"load_exported: {path} uses libdet's onnxruntime ops: {e}") from e
        runner = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    else:
        runner = torch.jit.load(str(path), map_location=device)
    return ExportedModel(fmt, path, tuple(info["output_names"]), info, runner)
