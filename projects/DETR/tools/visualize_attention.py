#!/usr/bin/env python
"""Draw DETR's attention over images, as PNGs.

For every image, writes to ``--output``:

- ``<name>_decoder.png``: for each detected object (score above ``--score-thresh``, at most ``--max-objects``), the
  last decoder layer's cross-attention of its query over the image (heads averaged), with its box and label;
- ``<name>_encoder.png``: for each pixel of ``--pixels`` (``x,y`` in original image coordinates), the last encoder
  layer's self-attention from the feature cell under it (heads averaged), the pixel marked.

    python projects/DETR/tools/visualize_attention.py --config-file projects/DETR/configs/detr_r50.py \\
        --weights detr-r50-e632da11.pth --input street.jpg --output attn/ --pixels 200,300 640,420

``--weights`` may be a libdet checkpoint, an official-release checkpoint or Hugging Face weights (converted on the
fly, COCO class rows mapped to libdet's). ``--opts key=value ...`` (last) overrides the config.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detr import DETR  # noqa: E402
from detr.weight_conversion import detect_layout, hf_to_libdet, load_state_dict_file, official_to_libdet  # noqa: E402

import libdet.data.transforms as T  # noqa: E402
from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.data.detection_utils import convert_image_to_rgb, read_image  # noqa: E402
from libdet.utils.file_io import atomic_write  # noqa: E402


class _AttentionRecorder:
    """Records the inputs of an ``nn.MultiheadAttention`` call, to recompute its (head-averaged) weights."""

    def __init__(self, module: torch.nn.MultiheadAttention):
        self.module = module
        self.call: tuple[tuple, dict] | None = None
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        self.call = (args, kwargs)

    def weights(self) -> torch.Tensor:
        """(N, L_query, L_key) attention probabilities of the recorded call."""
        if self.call is None:
            raise RuntimeError("visualize_attention: the attention module was not called.")
        args, kwargs = self.call
        kwargs = dict(kwargs, need_weights=True, average_attn_weights=True)
        return self.module(*args, **kwargs)[1]


@torch.no_grad()
def attention_maps(model: DETR, image: torch.Tensor) -> dict[str, Any]:
    """Predictions and last-layer attention of one (C, H, W) input image (already resized).

    Returns:
        dict with "scores" (Q,), "labels" (Q,), "boxes" (Q, 4) xyxy in input pixels, "decoder" (Q, h, w)
        cross-attention of each query, "encoder" (h, w, h, w) self-attention from each feature cell, and "stride"
        (input pixels per feature cell, per axis).
    """
    dec = _AttentionRecorder(model.transformer.decoder.layers[-1].multihead_attn)
    enc = _AttentionRecorder(model.transformer.encoder.layers[-1].self_attn)
    try:
        images, mask = model.preprocess_image([{"image": image}])
        logits, boxes, memory = model.predict(images.tensor, mask)
        dec_w, enc_w = dec.weights(), enc.weights()
    finally:
        dec.handle.remove()
        enc.handle.remove()
    h, w = memory.shape[-2:]
    height, width = images.image_sizes[0]
    scores, labels = logits[-1, 0].softmax(-1)[:, :-1].max(-1)
    instances = model.inference(logits[-1], boxes[-1], images.image_sizes)[0]
    return {
        "scores": scores,
        "labels": labels,
        "boxes": instances.pred_boxes.tensor,
        "decoder": dec_w[0].view(-1, h, w),
        "encoder": enc_w[0].view(h, w, h, w),
        "stride": (images.tensor.shape[-2] / h, images.tensor.shape[-1] / w),
        "image_size": (height, width),
    }


def _overlay(ax, image: np.ndarray, attention: torch.Tensor, stride: tuple[float, float]) -> None:
    h, w = attention.shape
    ax.imshow(image)
    # the map covers the padded batch; extent puts feature cells on their input pixels
    ax.imshow(attention.numpy(), cmap="inferno", alpha=0.6, extent=(0, w * stride[1], h * stride[0], 0))
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.axis("off")


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def draw(
    image_rgb: np.ndarray, maps: dict[str, Any], *, class_names, score_thresh, max_objects, pixels, scale, prefix
) -> list[str]:
    """Write ``<prefix>_decoder.png`` (when some object passes ``score_thresh``) and ``<prefix>_encoder.png`` (when
    ``pixels`` are given); returns the paths written. ``scale`` maps original image coordinates to input ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    keep = torch.nonzero(maps["scores"] > score_thresh).flatten()
    keep = keep[maps["scores"][keep].argsort(descending=True)][:max_objects]
    if len(keep):
        fig, axes = plt.subplots(1, len(keep), figsize=(4 * len(keep), 4), squeeze=False)
        for ax, q in zip(axes[0], keep.tolist()):
            _overlay(ax, image_rgb, maps["decoder"][q], maps["stride"])
            x0, y0, x1, y1 = maps["boxes"][q].tolist()
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan", linewidth=2))
            label = int(maps["labels"][q])
            name = class_names[label] if class_names and label < len(class_names) else str(label)
            ax.set_title(f"query {q}: {name} {float(maps['scores'][q]):.2f}")
        written.append(prefix + "_decoder.png")
        _save(fig, written[-1])
    if pixels:
        fig, axes = plt.subplots(1, len(pixels), figsize=(4 * len(pixels), 4), squeeze=False)
        h, w = maps["encoder"].shape[:2]
        for ax, (x, y) in zip(axes[0], pixels):
            xi, yi = x * scale[1], y * scale[0]
            row = min(int(yi / maps["stride"][0]), h - 1)
            col = min(int(xi / maps["stride"][1]), w - 1)
            _overlay(ax, image_rgb, maps["encoder"][row, col], maps["stride"])
            ax.plot([xi], [yi], "o", color="cyan", markersize=8)
            ax.set_title(f"self-attention at ({x}, {y})")
        written.append(prefix + "_encoder.png")
        _save(fig, written[-1])
    return written


def load_model(config_file: str, weights: str, opts: list[str]) -> tuple[DETR, Any]:
    """The config's model (eval mode) with ``weights`` of any layout loaded; also returns the config."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), opts)
    model = instantiate(cfg.model).eval()
    if not isinstance(model, DETR):
        raise ValueError(f"{config_file}: model is a {type(model).__name__}, not a DETR.")
    if weights:
        state_dict = load_state_dict_file(weights)
        layout = detect_layout(state_dict)
        coco = model.num_classes == 80
        if layout == "official":
            state_dict = official_to_libdet(state_dict, coco_classes=coco)
        elif layout == "hf":
            state_dict = hf_to_libdet(state_dict, coco_classes=coco)
        model.load_state_dict(state_dict)
    return model, cfg


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default="", help="libdet / official / Hugging Face weights")
    parser.add_argument("--input", nargs="+", required=True, help="image files")
    parser.add_argument("--output", required=True, help="directory for the PNGs")
    parser.add_argument("--score-thresh", type=float, default=0.7)
    parser.add_argument("--max-objects", type=int, default=6)
    parser.add_argument("--pixels", nargs="*", default=[], help="x,y pixels (original image) for encoder attention")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides key=value (last)")
    args = parser.parse_args(argv)
    pixels = []
    for p in args.pixels:
        try:
            x, y = (float(v) for v in p.split(","))
        except ValueError as e:
            raise SystemExit(f"--pixels: {p!r} is not 'x,y'") from e
        pixels.append((x, y))

    model, cfg = load_model(args.config_file, args.weights, args.opts)
    augmentations = instantiate(cfg.dataloader.test.mapper.augmentations) if "dataloader" in cfg else []
    class_names = None
    if "dataloader" in cfg:
        from libdet.data import MetadataCatalog

        names = cfg.dataloader.test.dataset.names
        class_names = MetadataCatalog.get(names if isinstance(names, str) else names[0]).get("thing_classes")
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in args.input:
        original = read_image(path, format=model.input_format)
        aug_input = T.AugInput(original)
        T.AugmentationList(augmentations)(aug_input)
        image = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        maps = attention_maps(model, image)
        shown = convert_image_to_rgb(aug_input.image, model.input_format)
        scale = (aug_input.image.shape[0] / original.shape[0], aug_input.image.shape[1] / original.shape[1])
        prefix = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        written += draw(
            shown,
            maps,
            class_names=class_names,
            score_thresh=args.score_thresh,
            max_objects=args.max_objects,
            pixels=pixels,
            scale=scale,
            prefix=prefix,
        )
    for p in written:
        print(p)
    return written


if __name__ == "__main__":
    main()
