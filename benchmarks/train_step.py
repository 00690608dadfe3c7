"""Time of one Mask R-CNN R50-FPN training iteration (forward, backward, SGD step) on CPU or another device.

Usage::

    python benchmarks/train_step.py            # batch of 2 images of about 512 px, median of 3 iterations
    python benchmarks/train_step.py --quick    # 2 images of 256 px, 2 iterations
    python benchmarks/train_step.py --threads 4

The model is ``configs/common/models/mask_rcnn_fpn.py`` with RANDOM weights (no checkpoint is downloaded)
and as configured: FrozenBN, stem and res2 frozen; the FrozenBN statistics are calibrated on the batch first
(see ``benchmarks/inference.py``), else random weights overflow. Each image gets 5 random boxes with rectangular
bit masks; the data pipeline is not part of the timing.
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
from libdet.structures import BitMasks, Boxes, Instances  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import calibrate_frozen_bn  # noqa: E402


def _random_sample(height: int, width: int, num_objects: int, generator: torch.Generator) -> dict:
    image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8).float()
    xy = torch.rand(num_objects, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
    wh = 16 + torch.rand(num_objects, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
    boxes = torch.cat([xy, xy + wh], dim=1).floor()
    masks = torch.zeros(num_objects, height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = True
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.randint(0, 80, (num_objects,), generator=generator)
    instances.gt_masks = BitMasks(masks)
    return {"image": image, "instances": instances}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 px images and 2 iterations")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (256, 320) if args.quick else (512, 640)
    iters = args.iters or (2 if args.quick else 3)

    cfg = LazyConfig.load(str(REPO_ROOT / "configs/common/models/mask_rcnn_fpn.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(args.device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    batch = [_random_sample(size[0], size[1], 5, generator) for _ in range(2)]
    calibrate_frozen_bn(model.backbone, model.preprocess_image(batch).tensor)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def step() -> dict:
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        return losses

    step()  # warm-up
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        losses = step()
        sync()
        times.append(time.perf_counter() - start)
    print("Mask R-CNN R50-FPN training iteration (RANDOM weights, configs/common/models/mask_rcnn_fpn.py)")
    print(f"  device: {args.device}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"  batch: 2 x 3 x {size[0]} x {size[1]}, 5 objects per image")
    print("  losses: " + ", ".join(f"{k}={v.item():.3f}" for k, v in losses.items()))
    print(
        f"  time per iteration: median {statistics.median(times):.2f} s, min {min(times):.2f} s over {iters} iterations"
    )


if __name__ == "__main__":
    main()
