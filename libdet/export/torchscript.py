"""TorchScript helpers (detectron2 parity): script a model that uses ``Instances``, and inspect a
TorchScript model's code and graphs.

TorchScript *tracing* of every model family is :func:`libdet.export.export_model` with
``format="torchscript"``; :func:`scripting_with_instances` *scripts* (``torch.jit.script``) a model whose
inference passes :class:`~libdet.structures.Instances` around (docs/export_support.md lists the families
that script).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .torchscript_patch import compile_attribute_classes, freeze_training_mode, patch_instances, resolved_annotations

__all__ = ["scripting_with_instances", "dump_torchscript_IR"]


def scripting_with_instances(model: nn.Module, fields: dict[str, type]) -> torch.jit.ScriptModule:
    """Script ``model`` (``torch.jit.script``) with ``Instances`` compiled as a class with the given fields.

    Every ``Instances`` the model's inference creates or reads must only use fields listed in ``fields``
    (e.g. ``proposal_boxes``, ``objectness_logits``, ``pred_boxes``, ``scores``, ``pred_classes``,
    ``pred_masks`` for Mask R-CNN). The model is scripted with its current ``training`` flag frozen to a
    constant, so the code of the other mode is not compiled: call ``model.eval()`` first for inference.
    As in detectron2, inputs are ``[{"image": (C, H, W) tensor}, ...]`` and scripted detectors return, per
    image, the raw detections at the network input resolution (``GeneralizedRCNN``: call
    ``inference(inputs, do_postprocess=False)``; ``RetinaNet``/``FCOS``: call the model; ``PanopticFPN``:
    ``inference(inputs, do_postprocess=False)`` returns ``(instances, sem_seg scores)``; ``SemanticSegmentor``:
    call the model, which returns ``[{"sem_seg": ...}]`` as in eager), as objects of a
    generated class: turn them into ``Instances`` with :func:`libdet.utils.testing.convert_scripted_instances`
    and map them to the output size (and paste masks) with
    :func:`libdet.modeling.postprocessing.detector_postprocess`.

    Example::

        fields = {"proposal_boxes": Boxes, "objectness_logits": torch.Tensor, "pred_boxes": Boxes,
                  "scores": torch.Tensor, "pred_classes": torch.Tensor, "pred_masks": torch.Tensor}
        scripted = scripting_with_instances(model.eval(), fields)
        raw = scripted.inference([{"image": image}], do_postprocess=False)[0]
        instances = detector_postprocess(convert_scripted_instances(raw), height, width)

    Args:
        model: the module to script (not modified).
        fields: ``Instances`` field name -> type (``torch.Tensor``, ``Boxes``, ...).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        RuntimeError: (from TorchScript) naming the code that cannot be compiled.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"scripting_with_instances: `model` must be an nn.Module, got {type(model).__name__}.")
    with resolved_annotations(model), freeze_training_mode(model), patch_instances(fields):
        compile_attribute_classes(model)
        return torch.jit.script(model)


def dump_torchscript_IR(model: torch.jit.ScriptModule, dir: str | os.PathLike) -> None:
    """Write the code and graphs of a TorchScript model to ``dir``, to read what was traced/scripted:
    ``model_ts_code.txt`` (Python-like code of every sub-module), ``model_ts_IR.txt`` (graphs),
    ``model_ts_IR_inlined.txt`` (the inlined forward graph) and ``model.txt`` (the module tree).

    Args:
        model: a ``torch.jit.ScriptModule`` (traced or scripted) or ``ScriptFunction``.
        dir: output folder, created if needed.

    Raises:
        TypeError: if ``model`` is not a TorchScript module or function.
    """
    if not isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise TypeError(f"dump_torchscript_IR: expected a TorchScript module or function, got {type(model).__name__}.")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)

    def modules(prefix: str, module) -> list[tuple[str, torch.jit.ScriptModule]]:
        found = [(prefix, module)]
        if isinstance(module, torch.jit.ScriptModule):
            for name, child in module.named_children():
                found.extend(modules(f"{prefix}.{name}" if prefix else name, child))
        return found

    code, graphs = [], []
    for name, module in modules("", model):
        title = name or "<root>"
        try:
            module_code, graph = module.code, module.graph
        except (RuntimeError, AttributeError):  # a sub-module that was never called (no forward method)
            continue
        code.append(f"Submodule {title}:\n{module_code}\n")
        graphs.append(f"Submodule {title}:\n{graph}\n")
    (out / "model_ts_code.txt").write_text("\n".join(code))
    (out / "model_ts_IR.txt").write_text("\n".join(graphs))
    inlined = model.inlined_graph if isinstance(model, torch.jit.ScriptModule) else model.graph
    (out / "model_ts_IR_inlined.txt").write_text(str(inlined))
    (out / "model.txt").write_text(str(model))
