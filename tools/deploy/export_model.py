#!/usr/bin/env python
"""Export a model of a lazy config to torch.export / AOTInductor / ONNX / TorchScript, then run the exported
file on the sample images and report its largest difference to the eager model.

    python tools/deploy/export_model.py --config-file configs/COCO/mask_rcnn_r50.py --format onnx \\
        --output exported/ --sample-image a.jpg b.jpg train.init_checkpoint=model_final.pth

* builds ``cfg.model`` and loads ``train.init_checkpoint`` (required);
* sample images are read in the model's input format and resized by the config's test-time augmentations
  (``dataloader.test.mapper.augmentations``, default ``ResizeShortestEdge(800, max_size=1333)``): the
  exported graph takes resized images (``(N, C, H, W)`` float, 0-255) and returns results in that frame;
  without ``--sample-image`` a random image of ``--sample-size`` is used;
* the first image is the export sample; every image is then run through the exported file and the eager
  model, and the differences are printed and written to ``<output>/export_report.json``.

The exported file and its ``export_info.json`` run on their own (``libdet.export.load_exported``,
``tools/deploy/run_onnx.py``, the C++ example in ``tools/deploy/onnx_cpp/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMATS = ("torch_export", "aot_inductor", "onnx", "torchscript")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a lazy config (.py or .yaml)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="folder for the exported file and the report")
    parser.add_argument("--sample-image", nargs="*", default=[], help="images to export with and compare on")
    parser.add_argument("--sample-size", nargs=2, type=int, default=[512, 640], metavar=("H", "W"))
    parser.add_argument("--static", action="store_true", help="export with the sample's fixed shapes")
    parser.add_argument(
        "--onnx-custom-ops",
        action="store_true",
        help="(onnx) RoIAlign as libdet's onnxruntime op: faster, but the file then needs libdet's op library "
        "(libdet.export.onnxruntime_ops, docs/deployment.md)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return parser


def _select(cfg: Any, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def build_model(cfg: Any) -> torch.nn.Module:
    """``cfg.model`` in eval mode with ``train.init_checkpoint`` loaded.

    Raises:
        ValueError: no ``train.init_checkpoint``.
        FileNotFoundError: the weights file does not exist.
    """
    from libdet.checkpoint import load_config_weights
    from libdet.config import instantiate

    model = instantiate(cfg.model)
    load_config_weights(model, cfg, caller="export_model")
    return model.eval()


def sample_images(cfg: Any, model: torch.nn.Module, args: argparse.Namespace) -> list[torch.Tensor]:
    """``(1, C, H, W)`` float samples: the given images read and resized as at test time, or one random image."""
    from libdet.config import instantiate
    from libdet.data import detection_utils as utils
    from libdet.data import transforms as T

    if not args.sample_image:
        g = torch.Generator().manual_seed(0)
        channels = model.pixel_mean.shape[0]
        return [torch.rand(1, channels, *args.sample_size, generator=g) * 255]
    augs_cfg = _select(cfg, "dataloader.test.mapper.augmentations")
    augmentations = list(instantiate(augs_cfg)) if augs_cfg is not None else [T.ResizeShortestEdge(800, max_size=1333)]
    image_format = _select(cfg, "dataloader.test.mapper.image_format") or getattr(model, "input_format", None) or "BGR"
    samples = []
    for path in args.sample_image:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"export_model: --sample-image {path!r} does not exist.")
        image, _ = T.apply_augmentations(augmentations, utils.read_image(path, format=image_format))
        if image.ndim == 2:
            image = image[:, :, None]
        samples.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None])
    return samples


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Export, compare, write ``export_report.json``; returns the report."""
    from libdet.config import LazyConfig
    from libdet.export import compare_to_eager, export_model

    # `--sample-image a.png key=value`: argparse gives the override to --sample-image; move it to opts.
    overrides = [x for x in args.sample_image if "=" in x and not os.path.exists(x)]
    args.sample_image = [x for x in args.sample_image if x not in overrides]
    args.opts = overrides + list(args.opts or [])
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"export_model: config file {args.config_file!r} does not exist.")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), list(args.opts or []))
    model = build_model(cfg)
    samples = sample_images(cfg, model, args)
    exported = export_model(
        model,
        samples[0],
        args.format,
        args.output,
        dynamic=not args.static,
        onnx_custom_ops=args.onnx_custom_ops,
    )
    diff = compare_to_eager(model, exported, samples)
    report = {
        "config_file": args.config_file,
        "format": args.format,
        "exported_file": str(exported.path),
        "sample_sizes": [list(s.shape[2:]) for s in samples],
        "max_difference_to_eager": asdict(diff),
    }
    out = Path(args.output) / "export_report.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print(f"exported {exported.path}")
    print(f"exported vs eager on {len(samples)} image(s): {diff.summary()}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main(get_parser().parse_args()) else 1)
