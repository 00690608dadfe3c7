"""Mask R-CNN R50-FPN training step (forward, backward, SGD step): libdet against torchvision's
``maskrcnn_resnet50_fpn`` in one process, same weights, same batch, alternating runs.

Usage::

    python benchmarks/train_step.py              # 2 images of 512 x 512, 2 threads, 5 alternating runs each
    python benchmarks/train_step.py --quick      # 2 images of 256 x 256, 2 runs
    python benchmarks/train_step.py --profile    # also a torch.profiler table of one libdet step
    python benchmarks/train_step.py --ablation   # also libdet with an NCHW backbone / torchvision's ROIAlign
    python benchmarks/train_step.py --libdet-config configs/common/models/mask_rcnn_fpn.py  # detectron2's R50

Both models are the same network: torchvision's model is built as for training from pretrained weights
(FrozenBN everywhere, ``trainable_layers=3``: stem and res2 frozen) with RANDOM weights (no download), its FrozenBN
statistics calibrated on the batch; libdet's is ``configs/common/models/mask_rcnn_fpn_torchvision.py`` (detectron2's
defaults: ``freeze_at=2``, FrozenBN) holding the same weights (``libdet.checkpoint.torchvision_conversion``).
torchvision keeps 1000 RPN proposals per training image, as detectron2 does (its default is 2000); the other
training hyper-parameters are already the same (2000 proposals per level before NMS, 256 anchors and 512 ROIs
sampled per image, a quarter of them foreground). Each image has 5 boxes with rectangular bit masks; both
transforms leave the image size unchanged. The data pipeline is not timed.

Printed: the environment, each model's step time (median of the alternating runs: wall clock and this process's
CPU time, the steadier figure on a shared machine), the ratios libdet / torchvision (target: <= 0.8) and each
model's losses on the first step (the same weights, so about equal; the sampled anchors and ROIs differ).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.structures import BitMasks, Boxes, Instances  # noqa: E402
from libdet.utils.env import cpu_model_name  # noqa: E402
from libdet.utils.events import EventStorage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import calibrate_frozen_bn  # noqa: E402

TORCHVISION_CONFIG = "configs/common/models/mask_rcnn_fpn_torchvision.py"
NUM_CLASSES = 90  # torchvision's 91 less the background


def random_targets(size: int, num_objects: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """An image ``(3, size, size)`` in [0, 255] and ``num_objects`` boxes (whole pixels) with rectangular masks."""
    image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8).float()
    xy = torch.rand(num_objects, 2, generator=generator) * size * 0.7
    wh = 16 + torch.rand(num_objects, 2, generator=generator) * size * 0.3
    boxes = torch.cat([xy, xy + wh], dim=1).floor()
    masks = torch.zeros(num_objects, size, size, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = 1
    classes = torch.randint(0, NUM_CLASSES, (num_objects,), generator=generator)
    return image, {"boxes": boxes, "labels": classes + 1, "masks": masks}  # torchvision's 0 is the background


def libdet_sample(image: torch.Tensor, target: dict) -> dict:
    instances = Instances(tuple(image.shape[1:]))
    instances.gt_boxes = Boxes(target["boxes"].clone())
    instances.gt_classes = target["labels"] - 1
    instances.gt_masks = BitMasks(target["masks"].bool())
    return {"image": image, "instances": instances}


def time_alternating(fns: dict, runs: int, sync) -> dict[str, tuple[list[float], list[float]]]:
    """Warm each function up once, then ``runs`` rounds calling each in turn (a slow moment of a shared machine
    hits all alike). Per call: wall seconds and this process's CPU seconds (all threads; on a machine shared with
    other jobs the CPU time moves less than the wall time)."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for name, fn in fns.items():
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return times


def build_models(size: int, libdet_config: str, device: str):
    """torchvision's Mask R-CNN (random weights, calibrated FrozenBN) and libdet's holding the same weights."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    from libdet.checkpoint.torchvision_conversion import load_torchvision_maskrcnn

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    tv = MaskRCNN(
        backbone,
        num_classes=NUM_CLASSES + 1,
        min_size=size,  # the transform leaves the benchmark images unchanged
        max_size=size,
        rpn_post_nms_top_n_train=1000,  # detectron2's (and libdet's) per-image proposals in training
    )
    calibration = torch.randint(0, 256, (2, 3, size, size), generator=torch.Generator().manual_seed(1)).float()
    calibrate_frozen_bn(tv.backbone, tv.transform(list(calibration / 255))[0].tensors)

    cfg = LazyConfig.load(str(REPO_ROOT / libdet_config))
    cfg.model.roi_heads.num_classes = NUM_CLASSES
    model = instantiate(cfg.model)
    if libdet_config == TORCHVISION_CONFIG:
        load_torchvision_maskrcnn(model, tv.state_dict())
        weights = "the same random weights"
    else:  # another architecture: its own random weights, calibrated the same way
        calibrate_frozen_bn(model.backbone, model.preprocess_image([{"image": im} for im in calibration]).tensor)
        weights = "its own random weights"
    return tv.to(device).train(), model.to(device).train(), weights


def libdet_cpu_paths(model: torch.nn.Module, device: str) -> str:
    """Which of libdet's CPU paths this run takes (see benchmarks/README.md, Training step)."""
    from libdet.layers import Conv2d, FrozenBatchNorm2d
    from libdet.utils import compiled_ops

    kernels = "libdet's" if compiled_ops.use_kernel("roi_align", device) else "torchvision's"
    folded = sum(isinstance(m, Conv2d) and isinstance(m.norm, FrozenBatchNorm2d) for m in model.modules())
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    layout = getattr(bottom_up, "channels_last", None)
    layout_text = {None: "channels-last on CPU (default)", True: "channels-last", False: "NCHW"}[layout]
    return f"ROIAlign kernels: {kernels}; backbone memory format: {layout_text}; convs with a folded FrozenBN: {folded}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 px images and 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each model (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--libdet-config", default=TORCHVISION_CONFIG, help="libdet model config (repo-relative)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one libdet step")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also time libdet without its CPU paths: NCHW backbone, and NCHW + torchvision's ROIAlign kernels",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = 256 if args.quick else 512
    runs = args.runs or (2 if args.quick else 5)

    tv, model, weights = build_models(size, args.libdet_config, args.device)
    generator = torch.Generator().manual_seed(0)
    samples = [random_targets(size, 5, generator) for _ in range(2)]
    tv_images = [(image / 255).to(args.device) for image, _ in samples]
    tv_targets = [{k: v.to(args.device) for k, v in t.items()} for _, t in samples]
    batch = [libdet_sample(image.to(args.device), {k: v.to(args.device) for k, v in t.items()}) for image, t in samples]

    def sgd(m: torch.nn.Module) -> torch.optim.Optimizer:
        params = [p for p in m.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)

    tv_opt, opt = sgd(tv), sgd(model)
    first_losses: dict[str, dict[str, float]] = {}

    def step(name: str, m: torch.nn.Module, optimizer: torch.optim.Optimizer, *inputs) -> None:
        losses = m(*inputs)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        if name not in first_losses:
            first_losses[name] = {k: float(v.detach()) for k, v in losses.items()}

    def run_libdet() -> None:
        with EventStorage():  # the model logs training statistics, as under the trainer
            step("libdet", model, opt, batch)

    def run_torchvision() -> None:
        step("torchvision", tv, tv_opt, tv_images, tv_targets)

    fns = {"libdet": run_libdet, "torchvision": run_torchvision}
    if args.ablation:
        nchw = copy.deepcopy(model)
        nchw.backbone.bottom_up.channels_last = False
        nchw_opt = sgd(nchw)
        nchw_tv = copy.deepcopy(nchw)  # its own copy, so that its first-step losses are comparable
        nchw_tv_opt = sgd(nchw_tv)

        def run_nchw() -> None:
            with EventStorage():
                step("libdet NCHW", nchw, nchw_opt, batch)

        def run_nchw_torchvision_backward() -> None:
            previous = os.environ.get("LIBDET_DISABLE_OPS")
            os.environ["LIBDET_DISABLE_OPS"] = "roi_align"  # read on every call
            try:
                with EventStorage():
                    step("libdet NCHW, tv ROIAlign", nchw_tv, nchw_tv_opt, batch)
            finally:
                if previous is None:
                    del os.environ["LIBDET_DISABLE_OPS"]
                else:
                    os.environ["LIBDET_DISABLE_OPS"] = previous

        fns["libdet NCHW"] = run_nchw
        fns["libdet NCHW, tv ROIAlign"] = run_nchw_torchvision_backward

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    import torchvision

    print("Mask R-CNN R50-FPN training step (forward, backward, SGD step), RANDOM weights")
    print(
        f"  CPU: {cpu_model_name()}, torch threads: {torch.get_num_threads()}, device: {args.device}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    print(f"  batch: 2 x 3 x {size} x {size}, 5 objects per image; libdet: {args.libdet_config}, {weights}")
    print(f"  libdet: {libdet_cpu_paths(model, args.device)}")
    times = time_alternating(fns, runs, sync)
    medians = {name: statistics.median(wall) for name, (wall, _) in times.items()}
    cpu_medians = {name: statistics.median(cpu) for name, (_, cpu) in times.items()}
    for name, (wall, _) in times.items():
        print(
            f"  {name:26s} wall median {medians[name]:.3f} s (min {min(wall):.3f} s), CPU time median "
            f"{cpu_medians[name]:.3f} s, over {runs} steps"
        )
        print("    first-step losses: " + ", ".join(f"{k}={v:.3f}" for k, v in first_losses[name].items()))
    ratio = medians["libdet"] / medians["torchvision"]
    cpu_ratio = cpu_medians["libdet"] / cpu_medians["torchvision"]
    print(f"  libdet / torchvision: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time (target <= 0.8x)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            run_libdet()
            sync()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
