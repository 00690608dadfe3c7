"""TorchScript helpers (detectron2 parity): inspect a TorchScript model's code and graphs.

TorchScript *tracing* of every model family is :func:`libdet.export.export_model` with
``format="torchscript"``. Scripting (``torch.jit.script``) of libdet's models, detectron2's
``scripting_with_instances``, is not supported: the model code uses Python features TorchScript lacks
(``from __future__`` annotations of structures, dict-of-Any inputs); use tracing or ``torch.export``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["dump_torchscript_IR"]


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
