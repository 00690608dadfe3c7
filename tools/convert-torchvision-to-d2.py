#!/usr/bin/env python
"""Convert a torchvision ResNet checkpoint to a detectron2-format weight pickle for libdet backbones.

The output ``{"model": {name: ndarray}, "__author__": "torchvision", "matching_heuristics": True}`` uses the
names of a libdet / detectron2 ``ResNet`` (``stem.conv1.norm.weight``, ``res2.0.conv1.weight``, ...); the
checkpointer matches them to the full model names (``backbone.bottom_up.res2.0.conv1.weight``) by suffix. The
ImageNet classifier (``fc.*``) and BatchNorm's ``num_batches_tracked`` counters are dropped.

Usage::

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50-torchvision.pkl

A torchvision ResNet-50 puts the stride of each block in its 3x3 conv and expects RGB inputs normalised by
ImageNet mean / std, so a config using the converted file sets ``stride_in_1x1=False``, ``input_format="RGB"``,
``pixel_mean=[123.675, 116.280, 103.530]`` and ``pixel_std=[58.395, 57.120, 57.375]``.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def convert_name(name: str) -> str | None:
    """torchvision ResNet key -> detectron2 ResNet key; ``None`` for keys a detection backbone has no use for.

    ``conv1.weight`` → ``stem.conv1.weight``, ``bn1.bias`` → ``stem.conv1.norm.bias``,
    ``layer1.0.bn2.weight`` → ``res2.0.conv2.norm.weight``, ``layer3.0.downsample.1.running_mean`` →
    ``res4.0.shortcut.norm.running_mean``.

    Raises:
        ValueError: a key that is not part of a torchvision ResNet (names it).
    """
    if name.startswith("fc.") or name.endswith("num_batches_tracked"):
        return None
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", name)
    if m:
        return "stem.conv1." + ("norm." if m.group(1) == "bn1" else "") + m.group(2)
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)", name)
    if not m:
        raise ValueError(f"convert-torchvision-to-d2: {name!r} is not a key of a torchvision ResNet.")
    layer, block, module, param = m.groups()
    if module.startswith("downsample"):
        module = "shortcut" if module.endswith("0") else "shortcut.norm"
    elif module.startswith("bn"):
        module = f"conv{module[2]}.norm"
    return f"res{int(layer) + 1}.{block}.{module}.{param}"


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Rename every key of a torchvision ResNet ``state_dict`` (see :func:`convert_name`), as numpy arrays."""
    out = {}
    for name, value in state_dict.items():
        new = convert_name(name)
        if new is not None:
            out[new] = value.detach().cpu().numpy()
    return out


def _read_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    """Weights of a torchvision checkpoint (a bare state_dict or ``{"state_dict"|"model": ...}``), read with
    ``weights_only=True`` so the file cannot run code."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"convert-torchvision-to-d2: {path!r} does not hold a state_dict of tensors.")
    return obj


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="torchvision ResNet checkpoint (.pth)")
    parser.add_argument("output", help="detectron2-format pickle to write (.pkl)")
    args = parser.parse_args(argv)
    from libdet.utils.file_io import atomic_write

    model = convert_state_dict(_read_state_dict(args.input))
    with atomic_write(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    print(f"Wrote {len(model)} arrays to {args.output}")
    return model


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(str(e))
