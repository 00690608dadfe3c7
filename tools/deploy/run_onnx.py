#!/usr/bin/env python
"""Run an ONNX file written by ``tools/deploy/export_model.py`` in onnxruntime and draw its predictions,
from the exported files alone (``model.onnx`` and its ``export_info.json``; no config, no weights).

    python tools/deploy/run_onnx.py --model exported/model.onnx --input a.jpg b.jpg --output vis/

Each image is resized so that its short side is ``--short-edge`` (long side at most ``--max-size``), as
``ResizeShortestEdge`` does at test time, run, and the predictions are drawn on the original image (boxes
and keypoints scaled back, masks resized).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model.onnx written by export_model.py")
    parser.add_argument("--input", nargs="+", required=True, help="image files")
    parser.add_argument("--output", required=True, help="folder for the drawn images")
    parser.add_argument("--short-edge", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--confidence", type=float, default=0.5, help="draw instances scoring at least this")
    parser.add_argument(
        "--custom-ops-library",
        default=None,
        help="for a file exported with --onnx-custom-ops: libdet's built onnxruntime op library (default: "
        "built on first use, see libdet.export.onnxruntime_ops)",
    )
    return parser


def resized_size(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """The ``(H, W)`` of ``ResizeShortestEdge(short_edge, max_size)``."""
    scale = short_edge / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def to_original_frame(result: dict, scale_y: float, scale_x: float, size: tuple[int, int]) -> dict:
    """Boxes, keypoints and masks of one image mapped from the resized to the original image."""
    from torch.nn import functional as F

    inst = result["instances"]
    inst._image_size = size
    boxes = inst.pred_boxes.tensor.clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    inst.pred_boxes.tensor = boxes
    if inst.has("pred_keypoints"):
        kp = inst.pred_keypoints.clone()
        kp[:, :, 0] *= scale_x
        kp[:, :, 1] *= scale_y
        inst.pred_keypoints = kp
    if inst.has("pred_masks") and len(inst):
        masks = F.interpolate(inst.pred_masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
        inst.pred_masks = masks
    return result


def main(args: argparse.Namespace) -> list[str]:
    """Draw every input; returns the written paths."""
    from libdet.export import load_exported
    from libdet.utils.visualizer import Visualizer

    exported = load_exported(args.model, custom_ops_library=args.custom_ops_library)
    if exported.format != "onnx":
        raise ValueError(f"run_onnx: {args.model} is a {exported.format} export, not ONNX.")
    if "boxes" not in exported.output_names:
        raise ValueError(f"run_onnx: {args.model} has no detections to draw (outputs {exported.output_names}).")
    input_format = exported.info.get("input_format") or "BGR"
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in args.input:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"run_onnx: input image {path!r} does not exist.")
        rgb = Image.open(path).convert("RGB")
        h, w = rgb.height, rgb.width
        new_h, new_w = resized_size(h, w, args.short_edge, args.max_size)
        resized = np.asarray(rgb.resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
        if input_format == "BGR":
            resized = resized[:, :, ::-1]
        images = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]
        result = to_original_frame(exported.predict(images)[0], h / new_h, w / new_w, (h, w))
        inst = result["instances"]
        inst = inst[inst.scores >= args.confidence]
        vis = Visualizer(np.asarray(rgb), None).draw_instance_predictions(inst)
        out = str(Path(args.output) / (Path(path).stem + ".png"))
        vis.save(out)
        print(f"{path}: {len(inst)} instances with score >= {args.confidence} -> {out}")
        written.append(out)
    return written


if __name__ == "__main__":
    sys.exit(0 if main(get_parser().parse_args()) else 1)
