#!/usr/bin/env python
"""Show where a trained detector looks: per-level feature maps, RPN objectness (or a dense detector's class
probability), and gradient saliency + Grad-CAM of chosen detections, as PNG files.

Usage (config overrides ``key=value`` come as in the trainer)::

    python tools/explain.py --config-file cfg.py --input img.jpg --output explain/ train.init_checkpoint=model.pth
    python tools/explain.py --config-file cfg.py --input img.jpg --output explain/ --detections 0 2 --target mask ...

Works for GeneralizedRCNN models (Faster / Mask / Cascade / Keypoint R-CNN, Panoptic FPN's instances) and dense
detectors (RetinaNet, FCOS);
the maps come from :func:`libdet.modeling.interpretability.explain_detections`. The image is read in
``dataloader.test.mapper.image_format`` and resized by ``dataloader.test.mapper.augmentations`` as in evaluation
(default ``ResizeShortestEdge(800, max_size=1333)``); all maps are at that resized size.

Files written to ``--output`` (atomically):

* ``detections.png``: the image with the explained detections' boxes (numbered by rank);
* ``features_<level>.png``: mean absolute activation of each backbone level;
* ``objectness_<level>.png`` (R-CNN: RPN objectness) or ``class_probability_<level>.png`` (dense detectors);
* ``det<k>_<target>_saliency.png`` and ``det<k>_<target>_gradcam.png``: for detection ``k``, the gradient
  saliency and Grad-CAM of its class score (``--target score``) or mask (``--target mask``) over the image.

:func:`main` returns the written paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("libdet.tools.explain")

__all__ = ["get_parser", "heatmap", "main", "overlay"]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="libdet explain: feature maps, objectness and saliency as PNGs.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the lazy config file")
    parser.add_argument("--input", required=True, help="an image file")
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--detections", nargs="+", default=["0"], help="ranks of detections to explain (0: top)")
    parser.add_argument("--target", choices=("score", "mask"), default="score", help="explain the class score or mask")
    parser.add_argument("--device", default="auto", help="'auto' (GPU when available), 'cpu', 'cuda', 'cuda:N'")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides 'path.key=value'")
    return parser


def heatmap(values: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A ``(h, w)`` map as an RGB uint8 ``(H, W, 3)`` image (viridis, scaled by its own range), optionally
    enlarged to ``size`` (nearest neighbour, so that coarse levels show their cells)."""
    import matplotlib
    from PIL import Image

    v = np.asarray(values, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    rgb = (matplotlib.colormaps["viridis"](v)[..., :3] * 255).astype(np.uint8)
    if size is not None and rgb.shape[:2] != tuple(size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.NEAREST))
    return rgb


def overlay(image_rgb: np.ndarray, values: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``values`` (same ``(H, W)`` as the image) as a heat map blended over the image."""
    heat = heatmap(values).astype(np.float32)
    return (alpha * heat + (1 - alpha) * image_rgb.astype(np.float32)).clip(0, 255).astype(np.uint8)


def _draw_boxes(image_rgb: np.ndarray, instances: Any, indices: Sequence[int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(image_rgb)
    draw = ImageDraw.Draw(img)
    boxes = instances.pred_boxes.tensor.numpy()
    for i in indices:
        x0, y0, x1, y1 = boxes[i].tolist()
        draw.rectangle([x0, y0, x1, y1], outline=(255, 64, 64), width=2)
        label = f"{i}: class {int(instances.pred_classes[i])} {float(instances.scores[i]):.2f}"
        draw.text((x0 + 2, y0 + 1), label, fill=(255, 255, 255))
    return np.asarray(img)


def _save_png(path: str, rgb: np.ndarray) -> str:
    from PIL import Image

    from libdet.utils.file_io import atomic_write

    with atomic_write(path, "wb") as f:
        Image.fromarray(rgb).save(f, format="PNG")
    return path


def _load(args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:

    from libdet.checkpoint import load_config_weights
    from libdet.config import LazyConfig, instantiate
    from libdet.engine.defaults import resolve_device

    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"explain: config file {args.config_file!r} does not exist.")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), list(args.opts or []))
    if "model" not in cfg:
        raise ValueError(f"explain: config {args.config_file!r} has no 'model' key; keys are {sorted(cfg.keys())}.")
    model = instantiate(cfg.model)
    model.to(resolve_device(args.device, setting="--device"))
    load_config_weights(model, cfg, caller="explain")
    return cfg, model.eval()


def _prepare_image(cfg: Any, path: str, model: torch.nn.Module) -> tuple[np.ndarray, str]:
    """The image resized as in evaluation, in the model's input format, and that format."""
    from omegaconf import OmegaConf

    from libdet.config import instantiate
    from libdet.data import transforms as T
    from libdet.data.detection_utils import read_image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"explain: --input {path!r} does not exist.")
    input_format = OmegaConf.select(cfg, "dataloader.test.mapper.image_format", default=None)
    input_format = input_format or getattr(model, "input_format", None) or "BGR"
    augs = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None)
    augs = list(instantiate(augs)) if augs is not None else [T.ResizeShortestEdge(800, max_size=1333)]
    image, _ = T.apply_augmentations(augs, read_image(path, format=input_format))
    return image, input_format


def _split_overrides(args: argparse.Namespace) -> None:
    """``--detections 0 1 key=value``: argparse gives the override to ``--detections``; move it to ``opts``."""
    overrides = [x for x in args.detections if "=" in x]
    args.opts = overrides + list(args.opts or [])
    ranks = [x for x in args.detections if "=" not in x]
    if not ranks or not all(x.isdigit() for x in ranks):
        raise ValueError(f"explain: --detections takes ranks (0, 1, ...), got {ranks}.")
    args.detections = [int(x) for x in ranks]


def main(args: argparse.Namespace) -> list[str]:
    """Explain the detections ``args`` name and write the PNGs; returns their paths."""
    from libdet.data.detection_utils import convert_image_to_rgb
    from libdet.modeling.interpretability import explain_detections

    _split_overrides(args)
    cfg, model = _load(args)
    image, input_format = _prepare_image(cfg, args.input, model)
    explanations = explain_detections(model, image, detections=args.detections, target=args.target)
    rgb = np.ascontiguousarray(convert_image_to_rgb(image, input_format))
    size = rgb.shape[:2]
    os.makedirs(args.output, exist_ok=True)
    out = args.output
    first = explanations[0]
    written = [_save_png(os.path.join(out, "detections.png"), _draw_boxes(rgb, first.instances, args.detections))]
    for level, values in first.features.items():
        written.append(_save_png(os.path.join(out, f"features_{level}.png"), heatmap(values, size)))
    prefix = "objectness" if first.objectness_source == "rpn_objectness" else "class_probability"
    for level, values in first.objectness.items():
        written.append(_save_png(os.path.join(out, f"{prefix}_{level}.png"), heatmap(values, size)))
    for exp in explanations:
        k, t = exp.detection, exp.target
        boxed = [k]
        for name, values in (("saliency", exp.saliency), ("gradcam", exp.grad_cam)):
            picture = _draw_boxes(overlay(rgb, values), exp.instances, boxed)
            written.append(_save_png(os.path.join(out, f"det{k}_{t}_{name}.png"), picture))
    return written


def invoke_main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    from libdet.utils.logger import setup_logger

    setup_logger(name="libdet")
    args = get_parser().parse_args(argv)
    written = main(args)
    logger.info(f"explain: wrote {len(written)} file(s) under {args.output}")


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
