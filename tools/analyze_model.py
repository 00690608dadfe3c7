#!/usr/bin/env python
"""Count a model's FLOPs, parameters and activations, or print its structure, with fvcore.

The model is built from a lazy config (``cfg.model``, after ``key=value`` overrides) and fed a dummy batch
of random images of a chosen size, so no dataset is needed. Two input formats are supported:

* ``detection``: a libdet / detectron2 meta-architecture, called as ``model([{"image": (3, H, W) tensor,
  "height": H, "width": W}, ...])`` in eval mode; its outputs (lists, dicts, ``Instances``, ``Boxes``) are
  flattened to tensors so that fvcore can trace it;
* ``tensor``: a plain module called as ``model(images)`` with a ``(N, 3, H, W)`` tensor (torchvision
  classifiers, backbones).

``auto`` (the default) picks ``detection`` when the model's ``forward`` takes ``batched_inputs`` (the name
every libdet meta-architecture uses), else ``tensor``. fvcore counts one fused multiply-add as one flop.

Examples::

    python tools/analyze_model.py --config-file configs/COCO/mask_rcnn_R_50_FPN_1x.py --tasks flop parameter
    python tools/analyze_model.py --config-file cfg.py --tasks structure model.backbone.depth=101
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

TASKS = ("flop", "parameter", "activation", "structure")
DEFAULT_SIZE = {"detection": (800, 1333), "tensor": (224, 224)}


def build_model(config_file: str, overrides: Sequence[str] = ()) -> nn.Module:
    """Load a lazy config, apply ``key=value`` overrides and instantiate its ``model``.

    Raises:
        ValueError: if the config has no ``model`` key or it does not build an ``nn.Module``.
    """
    from libdet.config import LazyConfig, instantiate

    cfg = LazyConfig.load(config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    if "model" not in cfg:
        raise ValueError(f"analyze_model: config {config_file!r} has no 'model' key; keys are {sorted(cfg.keys())}.")
    model = instantiate(cfg.model)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"analyze_model: 'model' of config {config_file!r} built a {type(model).__name__}, not an nn.Module."
        )
    return model


def choose_input_format(model: nn.Module) -> str:
    """``"detection"`` if ``model.forward`` takes ``batched_inputs``, else ``"tensor"``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "tensor"
    return "detection" if "batched_inputs" in params else "tensor"


def _flatten_outputs(obj: Any) -> list[torch.Tensor]:
    """All tensors inside nested lists / tuples / dicts / ``Instances`` / ``Boxes``-like objects, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _flatten_outputs(x)]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _flatten_outputs(obj[k])]
    if hasattr(obj, "get_fields"):  # Instances
        return _flatten_outputs(obj.get_fields())
    if isinstance(getattr(obj, "tensor", None), torch.Tensor):  # Boxes, BitMasks, Keypoints, ...
        return [obj.tensor]
    if hasattr(obj, "polygons"):  # PolygonMasks hold numpy arrays, which tracing cannot see
        return []
    return []


class _DetectionInputAdapter(nn.Module):
    """Calls a detection model with ``[{"image", "height", "width"}]`` built from positional image tensors and
    returns its outputs flattened to a tuple of tensors, the form ``torch.jit`` tracing (and fvcore) needs."""

    def __init__(self, model: nn.Module, height: int, width: int):
        super().__init__()
        self.model = model
        self.height, self.width = height, width

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = [{"image": img, "height": self.height, "width": self.width} for img in images]
        outputs = _flatten_outputs(self.model(inputs))
        if not outputs:
            raise ValueError("analyze_model: the model returned no tensors; fvcore can only trace tensor outputs.")
        return tuple(outputs)


def prepare_inputs(
    model: nn.Module,
    *,
    input_format: str = "auto",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    """Make the module to trace and its dummy inputs.

    Args:
        model: the model (its device and dtype are taken from its first parameter or buffer).
        input_format: "auto", "detection" or "tensor" (see the module docstring).
        height, width: image size; default 800x1333 for detection, 224x224 for tensor models.
        batch_size: number of images.
        seed: seed of the random pixel values (0..255 for detection, standard normal for tensor models).

    Returns:
        (module, inputs, input_format): call ``module(*inputs)``; the format actually used.
    """
    if input_format == "auto":
        input_format = choose_input_format(model)
    if input_format not in DEFAULT_SIZE:
        raise ValueError(f"analyze_model: --input-format must be auto, detection or tensor, got {input_format!r}.")
    dh, dw = DEFAULT_SIZE[input_format]
    height, width = height or dh, width or dw
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), torch.zeros(()))
    device = ref.device
    dtype = ref.dtype if ref.dtype.is_floating_point else torch.float32
    gen = torch.Generator().manual_seed(seed)
    if input_format == "tensor":
        images = torch.randn(batch_size, 3, height, width, generator=gen).to(device=device, dtype=dtype)
        return model, (images,), input_format
    images = tuple(
        (torch.rand(3, height, width, generator=gen) * 255).to(device=device, dtype=dtype) for _ in range(batch_size)
    )
    return _DetectionInputAdapter(model, height, width), images, input_format


def analyze(
    model: nn.Module,
    tasks: Sequence[str] = ("flop", "parameter"),
    *,
    input_format: str = "auto",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    max_depth: int = 4,
) -> dict[str, Any]:
    """Run the requested analyses on ``model`` (put in eval mode).

    Returns:
        a dict with, per task: ``flop`` (total flops, one multiply-add = 1), ``flop_table`` (str),
        ``flop_unsupported`` (op name -> count of ops fvcore does not count); ``parameter`` (total),
        ``parameter_table``; ``activation`` (total), ``activation_by_operator``; ``structure`` (str); and
        ``input_format``, ``input_shapes``.
    """
    from fvcore.nn import (
        ActivationCountAnalysis,
        FlopCountAnalysis,
        flop_count_table,
        parameter_count,
        parameter_count_table,
    )

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"analyze_model: unknown task(s) {unknown}; choose from {list(TASKS)}.")
    model.eval()
    result: dict[str, Any] = {}
    if "parameter" in tasks:
        result["parameter"] = int(parameter_count(model)[""])
        result["parameter_table"] = parameter_count_table(model, max_depth=max_depth)
    if "structure" in tasks:
        result["structure"] = str(model)
    if "flop" in tasks or "activation" in tasks:
        module, inputs, fmt = prepare_inputs(
            model, input_format=input_format, height=height, width=width, batch_size=batch_size
        )
        result["input_format"] = fmt
        result["input_shapes"] = [tuple(t.shape) for t in inputs]
        with torch.no_grad():
            if "flop" in tasks:
                flops = FlopCountAnalysis(module, inputs)
                flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                result["flop"] = int(flops.total())
                result["flop_table"] = flop_count_table(flops, max_depth=max_depth)
                result["flop_unsupported"] = dict(flops.unsupported_ops())
            if "activation" in tasks:
                acts = ActivationCountAnalysis(module, inputs)
                acts.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                result["activation"] = int(acts.total())
                result["activation_by_operator"] = dict(acts.by_operator())
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; prints the report and returns :func:`analyze`'s dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="lazy config (.py or .yaml) with a 'model' key")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["flop", "parameter"])
    parser.add_argument("--input-format", choices=("auto", "detection", "tensor"), default="auto")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=None,
        help="dummy image size (default: 800 1333 for detection models, 224 224 otherwise)",
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-depth", type=int, default=4, help="module depth shown in the tables")
    parser.add_argument("--device", default="cpu", help="device to build and run the model on")
    parser.add_argument("opts", nargs="*", metavar="key=value", help="config overrides, anywhere on the line")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Overrides may follow --tasks (whose list would otherwise swallow them): take them out first.
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    overrides = args.opts + overrides

    model = build_model(args.config_file, overrides).to(args.device)
    h, w = args.input_size if args.input_size else (None, None)
    res = analyze(
        model,
        args.tasks,
        input_format=args.input_format,
        height=h,
        width=w,
        batch_size=args.batch_size,
        max_depth=args.max_depth,
    )
    if "input_shapes" in res:
        print(f"Input format {res['input_format']!r}, dummy inputs of shape {res['input_shapes']}")
    if "flop" in res:
        print(f"Flops table (one multiply-add = 1 flop):\n{res['flop_table']}")
        if res["flop_unsupported"]:
            print(f"Ops not counted: {res['flop_unsupported']}")
        print(f"Total GFlops: {res['flop'] / 1e9:.4f}")
    if "parameter" in res:
        print(f"Parameter table:\n{res['parameter_table']}")
        print(f"Total parameters: {res['parameter']:,}")
    if "activation" in res:
        by_op = ", ".join(f"{k}: {v / 1e6:.4f}" for k, v in sorted(res["activation_by_operator"].items()))
        print(f"Activations (millions) by operator: {by_op}")
        print(f"Total activations (millions): {res['activation'] / 1e6:.4f}")
    if "structure" in res:
        print(f"Model structure:\n{res['structure']}")
    return res


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(str(e))
