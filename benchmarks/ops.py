"""Compiled ops (libdet's rotated-box ops, TensorMask's swap_align2nat) vs their pure-PyTorch twins: time per call
and ratio.

Usage::

    python benchmarks/ops.py            # realistic sizes
    python benchmarks/ops.py --quick    # small sizes, a few seconds
    python benchmarks/ops.py --device cpu

Sizes (full): box_iou_rotated on 2000 x 2000 boxes; nms_rotated on 2000 boxes; ROIAlignRotated with 1000
RoIs (16-112 px, random angles; the RoIs FPN assigns to its stride-4 level) on a 256 x 200 x 336 feature
map (an 800 x 1344 image at stride 4), 7 x 7 output, adaptive sampling, forward + backward. swap_align2nat
(projects/TensorMask) converts the 15 x 15 aligned masks of that stride-4 map to the natural 30 x 30 masks of
the stride-8 level (lambda 2), forward + backward. Boxes are
spread over an 800 x 1344 image with sizes 8-256 px, so a realistic fraction of the pairs overlap.
Timings are medians over repeats, after a warm-up call (which also compiles the ops on first use).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libdet.utils import compiled_ops  # noqa: E402

rotated_boxes = importlib.import_module("libdet.layers.rotated_boxes")
nms = importlib.import_module("libdet.layers.nms")
roi_align_rotated = importlib.import_module("libdet.layers.roi_align_rotated")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "projects" / "TensorMask"))
swap_align2nat = importlib.import_module("tensormask.layers.swap_align2nat")

IMAGE_H, IMAGE_W = 800, 1344


def _random_boxes(n: int, generator: torch.Generator, min_size: float = 8, max_size: float = 256) -> torch.Tensor:
    centres = torch.rand(n, 2, generator=generator) * torch.tensor([IMAGE_W, IMAGE_H])
    sizes = torch.rand(n, 2, generator=generator) * (max_size - min_size) + min_size
    angles = torch.rand(n, 1, generator=generator) * 360 - 180
    return torch.cat([centres, sizes, angles], dim=1)


def _clustered_boxes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Detections as NMS sees them: several jittered boxes per object."""
    objects = _random_boxes(max(1, n // 10), generator)
    pick = torch.randint(0, objects.shape[0], (n,), generator=generator)
    jitter = torch.randn(n, 5, generator=generator) * torch.tensor([4.0, 4.0, 6.0, 6.0, 8.0])
    boxes = objects[pick] + jitter
    boxes[:, 2:4] = boxes[:, 2:4].clamp(min=2)
    return boxes, torch.rand(n, generator=generator)


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds per call, after one warm-up call."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(
    name: str, size: str, device: torch.device, kernel: Callable | None, twin: Callable, repeats: int, twin_repeats: int
) -> None:
    kernel_s = _time(kernel, device, repeats) if kernel is not None else None
    twin_s = _time(twin, device, twin_repeats)
    kernel_text = f"{kernel_s * 1e3:10.2f} ms" if kernel_s is not None else "       n/a   "
    ratio = f"{twin_s / kernel_s:8.1f}x" if kernel_s else "     n/a"
    print(f"{name:<20} {size:<38} {device.type:<5} {kernel_text} {twin_s * 1e3:12.2f} ms {ratio}", flush=True)


def bench_device(device: torch.device, quick: bool, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    twin_repeats = 1 if not quick else repeats

    # box_iou_rotated
    n = 500 if quick else 2000
    boxes = _random_boxes(n, generator).to(device)
    use = compiled_ops.use_kernel("box_iou_rotated", device)
    kernel = (lambda: torch.ops.libdet.box_iou_rotated(boxes, boxes)) if use else None
    overlap = float((rotated_boxes._box_iou_rotated_twin(boxes[:200], boxes) > 0).double().mean())
    _row(
        "box_iou_rotated",
        f"{n}x{n} fp32 ({overlap:.1%} pairs overlap)",
        device,
        kernel,
        lambda: rotated_boxes._box_iou_rotated_twin(boxes, boxes).float(),
        repeats,
        twin_repeats,
    )

    # nms_rotated
    boxes, scores = _clustered_boxes(n, generator)
    boxes, scores = boxes.to(device), scores.to(device)
    use = compiled_ops.use_kernel("nms_rotated", device)
    kernel = (lambda: torch.ops.libdet.nms_rotated(boxes, scores, 0.5)) if use else None
    kept = nms._nms_rotated_twin(boxes, scores, 0.5).numel()
    _row(
        "nms_rotated",
        f"{n} boxes, IoU 0.5 ({kept} kept)",
        device,
        kernel,
        lambda: nms._nms_rotated_twin(boxes, scores, 0.5),
        repeats,
        twin_repeats,
    )

    # ROIAlignRotated forward + backward
    channels, height, width, num_rois = (64, 100, 168, 200) if quick else (256, 200, 336, 1000)
    scale = height / IMAGE_H
    features = torch.randn(1, channels, height, width, generator=generator).to(device).requires_grad_()
    rois = torch.cat([torch.zeros(num_rois, 1), _random_boxes(num_rois, generator, 16, 112)], dim=1).to(device)
    grad = torch.randn(num_rois, channels, 7, 7, generator=generator).to(device)

    def forward_backward(fn: Callable) -> Callable[[], object]:
        def run() -> None:
            out = fn(features, rois, (7, 7), scale, 0)
            (g,) = torch.autograd.grad(out, features, grad)
            return g

        return run

    use = compiled_ops.use_kernel("roi_align_rotated", device)
    kernel = forward_backward(roi_align_rotated._ROIAlignRotatedFunction.apply) if use else None
    _row(
        "roi_align_rotated",
        f"{num_rois} RoIs, {channels}x{height}x{width}, fwd+bwd",
        device,
        kernel,
        forward_backward(roi_align_rotated._roi_align_rotated_twin),
        repeats,
        twin_repeats,
    )

    # swap_align2nat (TensorMask) forward + backward, lambda 2
    side, height, width = (11, 64, 84) if quick else (15, 200, 336)
    masks = torch.randn(1, side * side, height, width, generator=generator).to(device).requires_grad_()
    mask_grad = torch.randn(1, (2 * side) ** 2, (height + 1) // 2, (width + 1) // 2, generator=generator).to(device)

    def align2nat_forward_backward(fn: Callable) -> Callable[[], object]:
        def run() -> None:
            (g,) = torch.autograd.grad(fn(masks, 2, -6.0), masks, mask_grad)
            return g

        return run

    use = swap_align2nat.SWAP_ALIGN2NAT_OP.use_kernel(device)
    kernel = align2nat_forward_backward(swap_align2nat._SwapAlign2NatFunction.apply) if use else None
    _row(
        "swap_align2nat",
        f"{side}x{side} masks, {height}x{width}, lambda 2, fwd+bwd",
        device,
        kernel,
        align2nat_forward_backward(swap_align2nat._swap_align2nat_twin),
        repeats,
        twin_repeats,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per kernel measurement")
    args = parser.parse_args()

    for op in (*compiled_ops.register_core_ops(), swap_align2nat.SWAP_ALIGN2NAT_OP):
        op.load()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; ops: {compiled_ops.ops_status()}")
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        print("no CUDA device available")
        return 1
    print(f"{'op':<20} {'size':<38} {'dev':<5} {'kernel':>13} {'twin':>15} {'twin/kernel':>9}")
    for device in devices:
        bench_device(device, args.quick, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
