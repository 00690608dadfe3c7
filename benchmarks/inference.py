"""Mask R-CNN R50-FPN inference latency on CPU (or another device).

Usage::

    python benchmarks/inference.py                 # 800 x 1333 input, median of 5 runs
    python benchmarks/inference.py --quick         # 320 x 512 input, 2 runs, a few seconds
    python benchmarks/inference.py --threads 4 --runs 10

The model is ``configs/common/models/mask_rcnn_fpn.py`` with RANDOM weights (no checkpoint is downloaded).
With random weights the FrozenBN layers (identity at construction) normalise nothing and activations
overflow, so their statistics are first calibrated on the input (one forward pass, like a pretrained
model's). Random weights score every class about equally, below the config's 0.05 threshold, so by default
the score threshold is set to 0 to run the full pipeline as a trained model would: up to 100 detections
per image, each with a mask pasted into the image. ``--score-thresh 0.05`` keeps the config's value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.layers import FrozenBatchNorm2d  # noqa: E402


@torch.no_grad()
def calibrate_frozen_bn(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Set every FrozenBN's running mean / variance to the statistics of its input on ``images``
    ``(N, C, H, W)`` (already normalised), layer after layer, so a randomly initialised backbone keeps
    activations in a trained network's range."""

    def hook(module: FrozenBatchNorm2d, inputs) -> None:
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small input and 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score-thresh", type=float, default=0.0, help="box predictor test_score_thresh")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (320, 512) if args.quick else (800, 1333)
    runs = args.runs or (2 if args.quick else 5)

    cfg = LazyConfig.load(str(REPO_ROOT / "configs/common/models/mask_rcnn_fpn.py"))
    cfg.model.roi_heads.box_predictor.test_score_thresh = args.score_thresh
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(args.device).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8).float()
    inputs = [{"image": image, "height": height, "width": width}]
    with torch.no_grad():
        calibrate_frozen_bn(model.backbone, model.preprocess_image(inputs).tensor)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        outputs = model(inputs)  # warm-up
        sync()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            outputs = model(inputs)
            sync()
            times.append(time.perf_counter() - start)
    instances = outputs[0]["instances"]
    print("Mask R-CNN R50-FPN inference (RANDOM weights, configs/common/models/mask_rcnn_fpn.py)")
    print(f"  device: {args.device}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"  input: 1 x 3 x {height} x {width}, test_score_thresh: {args.score_thresh}")
    print(f"  detections: {len(instances)} (masks pasted: {instances.has('pred_masks')})")
    print(
        f"  latency: median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms over {runs} runs"
    )


if __name__ == "__main__":
    main()
