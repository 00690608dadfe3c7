"""Mask R-CNN R50-FPN inference latency: libdet against torchvision's ``maskrcnn_resnet50_fpn`` with the same
weights, in one process, plus the FLOP floor of this machine.

Usage::

    python benchmarks/inference.py                      # 800 x 1333, 2 threads, 5 alternating runs each
    python benchmarks/inference.py --quick              # 320 x 512, 2 runs, a few seconds
    python benchmarks/inference.py --fast               # also libdet's optimize_for_inference (fast mode)
    python benchmarks/inference.py --profile            # torch.profiler table of one libdet run
    python benchmarks/inference.py --ap-checkpoint model.pth  # shapes_val AP, float32 vs fast mode
    python benchmarks/inference.py --save-outputs a.pt  # then --compare-outputs a.pt after a change

Both models run on the same already-resized image (torchvision's transform keeps an 800x1333 image as it is).
The weights are RANDOM (no download): torchvision's model is built as for pretrained weights (FrozenBN
backbone), its FrozenBN statistics are calibrated on the input (one forward pass, so activations stay in a
trained network's range) and the weights are mapped into ``configs/common/models/mask_rcnn_fpn_torchvision.py``
with ``libdet.checkpoint.torchvision_conversion``. The class-score weights are spread (normal, std 0.1) so that,
as with a trained model, a few classes per proposal pass the usual 0.05 score threshold: 100 detections, each
with a mask pasted into the image.

Printed: the latency of each model (median of the alternating runs), the ratio libdet / torchvision, the
model's FLOPs (``torch.utils.flop_counter``: convolutions and matrix products, 2 FLOPs per multiply-add), this
machine's fp32 matmul peak measured in the same run (2048^3 ``torch.mm``) and the time against that FLOP
floor; and how far libdet's detections are from torchvision's (boxes in px, scores).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from libdet.checkpoint.torchvision_conversion import load_torchvision_maskrcnn  # noqa: E402
from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.utils.env import cpu_model_name  # noqa: E402


@torch.no_grad()
def calibrate_frozen_bn(backbone: torch.nn.Module, images: torch.Tensor) -> None:
    """Set every FrozenBN's running mean / variance (torchvision's or libdet's) to the statistics of its input
    on ``images`` ``(N, C, H, W)`` (already normalised), layer after layer, so a randomly initialised backbone
    keeps activations in a trained network's range."""

    def hook(module: torch.nn.Module, inputs) -> None:
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(hook) for m in backbone.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    try:
        backbone(images)
    finally:
        for h in handles:
            h.remove()


def build_models(height: int, width: int, score_thresh: float, device: str):
    """Random torchvision Mask R-CNN (calibrated) and the libdet model holding the same weights."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    tv = MaskRCNN(
        resnet_fpn_backbone(backbone_name="resnet50", weights=None),
        num_classes=91,
        min_size=min(height, width),  # the transform leaves the benchmark image unchanged
        max_size=max(height, width),
        box_score_thresh=score_thresh,
    ).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8).float()
    calibrate_frozen_bn(tv.backbone, tv.transform([image / 255])[0].tensors)
    with torch.no_grad():
        # Spread the class scores as a trained model's are: a few classes per ROI pass the 0.05 threshold,
        # and scores rarely tie, so both models rank the detections the same way.
        tv.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.1)

    cfg = LazyConfig.load(str(REPO_ROOT / "configs/common/models/mask_rcnn_fpn_torchvision.py"))
    cfg.model.roi_heads.box_predictor.test_score_thresh = score_thresh
    model = instantiate(cfg.model).eval()
    load_torchvision_maskrcnn(model, tv.state_dict())
    return tv.to(device), model.to(device), image.to(device)


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 ``torch.mm`` throughput of ``n x n`` matrices, in GFLOP/s, with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def count_flops(model: torch.nn.Module, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops()


def detection_arrays(instances) -> dict[str, torch.Tensor]:
    return {
        "boxes": instances.pred_boxes.tensor.float().cpu(),
        "scores": instances.scores.float().cpu(),
        "classes": instances.pred_classes.cpu(),
        "masks": instances.pred_masks.cpu(),
    }


def compare(name: str, ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], box_tol=0.05, score_tol=1e-3):
    """Match each detection to the reference detection of the same class with the highest box IoU (scores that
    differ by rounding may reorder near-ties, so the lists are not compared index by index) and print the
    number matched (IoU > 0.5), the largest box / score difference of the matches and their mean mask IoU."""
    from torchvision.ops import box_iou

    n, n_ref = len(ours["boxes"]), len(ref["boxes"])
    if n == 0 or n_ref == 0:
        print(f"  {name}: {n} vs {n_ref} detections")
        return n == n_ref
    iou = box_iou(ours["boxes"], ref["boxes"])
    iou[ours["classes"][:, None] != ref["classes"][None, :]] = -1
    best_iou, match = iou.max(dim=1)
    matched = best_iou > 0.5
    i, j = matched.nonzero()[:, 0], match[matched]
    box = (ours["boxes"][i] - ref["boxes"][j]).abs().max().item() if len(i) else float("nan")
    score = (ours["scores"][i] - ref["scores"][j]).abs().max().item() if len(i) else float("nan")
    ok = int(matched.sum()) == n == n_ref and box <= box_tol and score <= score_tol
    line = (
        f"  {name}: {int(matched.sum())}/{n} matched ({n_ref} in the reference), "
        f"max |box diff| {box:.2g} px, max |score diff| {score:.2g}"
    )
    if "masks" in ours and "masks" in ref and len(i):
        m1, m2 = ours["masks"][i].bool().flatten(1), ref["masks"][j].bool().flatten(1)
        inter = (m1 & m2).sum(1).float()
        union = (m1 | m2).sum(1).float()
        mask_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))  # both empty: equal
        line += f", mask IoU mean {mask_iou.mean().item():.4f}"
    print(line + (f" -- within {box_tol} px / {score_tol}" if ok else f" -- NOT all within {box_tol} px / {score_tol}"))
    return ok


def time_alternating(fns: dict, runs: int, sync) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run every function once to warm up, then ``runs`` rounds calling each in turn (so a slow moment of a
    shared machine hits all of them alike). Returns wall-clock and process CPU seconds per call (CPU time,
    summed over the threads, is less disturbed by other jobs on a shared machine)."""
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for name, fn in fns.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def shapes_ap(checkpoint: str, fast_options: dict) -> None:
    """Box / mask AP on ``shapes_val`` of ``configs/shapes/mask_rcnn_cpu.py`` weights, float32 against fast mode."""
    from libdet.checkpoint import DetectionCheckpointer
    from libdet.engine.fast_mode import optimize_for_inference
    from libdet.evaluation import inference_on_dataset

    cfg = LazyConfig.load(str(REPO_ROOT / "configs/shapes/mask_rcnn_cpu.py"))
    model = instantiate(cfg.model).eval()
    DetectionCheckpointer(model).load(checkpoint)
    fast = optimize_for_inference(copy.deepcopy(model), **fast_options)
    print(f"shapes_val AP of {checkpoint} (configs/shapes/mask_rcnn_cpu.py), fast mode {fast_options}")
    results = {}
    for name, m in (("fp32", model), ("fast", fast)):
        loader = instantiate(cfg.dataloader.test)
        evaluator = instantiate(cfg.dataloader.evaluator)
        start = time.perf_counter()
        with torch.inference_mode():
            results[name] = inference_on_dataset(m, loader, evaluator)
        print(f"  {name}: {time.perf_counter() - start:.1f} s for the whole evaluation")
    for task in ("bbox", "segm"):
        a, b = results["fp32"][task]["AP"], results["fast"][task]["AP"]
        print(f"  {task} AP: fp32 {a:.2f}, fast {b:.2f}, difference {b - a:+.2f} (target within 0.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small input and 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each model (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score-thresh", type=float, default=0.05, help="box score threshold of both models")
    parser.add_argument("--fast", action="store_true", help="also time libdet.engine.fast_mode")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one libdet run")
    parser.add_argument("--save-outputs", help="save libdet's detections (.pt) to compare after a change")
    parser.add_argument("--compare-outputs", help="compare libdet's detections with a --save-outputs file")
    parser.add_argument("--no-compile", action="store_true", help="fast mode without torch.compile")
    parser.add_argument("--ap-checkpoint", help="only measure shapes_val AP of these mask_rcnn_cpu.py weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fast_options = {"compile": not args.no_compile}
    if args.ap_checkpoint:
        shapes_ap(args.ap_checkpoint, fast_options)
        return
    height, width = (320, 512) if args.quick else (800, 1333)
    runs = args.runs or (2 if args.quick else 5)

    tv, model, image = build_models(height, width, args.score_thresh, args.device)
    inputs = [{"image": image, "height": height, "width": width}]
    tv_inputs = [image / 255]

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    results = {}

    def run_libdet():
        results["libdet"] = model(inputs)[0]["instances"]

    def run_torchvision():
        results["torchvision"] = tv(tv_inputs)[0]

    fns = {"libdet": run_libdet, "torchvision": run_torchvision}
    if args.fast:
        from libdet.engine.fast_mode import optimize_for_inference

        # float32 fast mode (folded BN, channels_last, compile) and the full one (plus bf16 where native)
        fast_models = {
            "libdet fp32 opt": optimize_for_inference(
                copy.deepcopy(model), bf16=False, example_inputs=inputs, **fast_options
            ),
            "libdet fast": optimize_for_inference(copy.deepcopy(model), example_inputs=inputs, **fast_options),
        }

        def runner(name):
            def run():
                results[name] = fast_models[name](inputs)[0]["instances"]

            return run

        for name in fast_models:
            fns[name] = runner(name)

    print("Mask R-CNN R50-FPN inference, same RANDOM weights (see the docstring)")
    print(f"  CPU: {cpu_model_name()}, device: {args.device}, torch threads: {torch.get_num_threads()}")
    print(f"  torch {torch.__version__}, input 1 x 3 x {height} x {width}, score threshold {args.score_thresh}")
    layout = model.backbone.bottom_up.channels_last
    print(f"  libdet backbone memory format: {'channels-last on CPU' if layout is None else layout}")
    peak_before = matmul_peak_gflops() if args.device == "cpu" else 0.0
    with torch.inference_mode():
        times, cpu_times = time_alternating(fns, runs, sync)
    medians = {name: statistics.median(t) for name, t in times.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpu_times.items()}
    for name, t in times.items():
        print(
            f"  {name:16s}: median {medians[name] * 1000:7.1f} ms (min {min(t) * 1000:7.1f} ms) wall, "
            f"{cpu_medians[name] * 1000:7.1f} ms CPU time (all threads), over {runs} runs"
        )
    print(
        f"  ratio libdet / torchvision: {medians['libdet'] / medians['torchvision']:.3f} wall, "
        f"{cpu_medians['libdet'] / cpu_medians['torchvision']:.3f} CPU time (target <= 0.75)"
    )
    if args.fast:
        opt = medians["libdet fp32 opt"]
        opt_cpu = cpu_medians["libdet fp32 opt"] / cpu_medians["torchvision"]
        print(f"  ratio libdet fp32 opt / torchvision: {opt / medians['torchvision']:.3f} wall, {opt_cpu:.3f} CPU time")
        fast_cpu = cpu_medians["libdet fast"] / cpu_medians["libdet"]
        print(
            f"  ratio libdet fast / libdet: {medians['libdet fast'] / medians['libdet']:.3f} wall, "
            f"{fast_cpu:.3f} CPU time (target <= 0.5)"
        )

    instances = results["libdet"]
    print(f"  libdet detections: {len(instances)} (masks pasted: {instances.has('pred_masks')})")
    ours = detection_arrays(instances)
    tv_out = results["torchvision"]
    ref = {
        "boxes": tv_out["boxes"].float().cpu(),
        "scores": tv_out["scores"].float().cpu(),
        "classes": tv_out["labels"].cpu() - 1,  # torchvision labels start at 1 (0 is the background)
        "masks": tv_out["masks"][:, 0].cpu() >= 0.5,  # soft masks, pasted by torchvision's own method
    }
    compare("libdet vs torchvision", ours, ref)
    if args.fast:
        compare("fp32 opt vs libdet", detection_arrays(results["libdet fp32 opt"]), ours)
        compare(
            "fast vs libdet (bf16: loose)", detection_arrays(results["libdet fast"]), ours, box_tol=1.0, score_tol=1e-2
        )
    if args.save_outputs:
        torch.save(ours, args.save_outputs)
        print(f"  saved libdet's detections to {args.save_outputs}")
    if args.compare_outputs:
        compare(f"libdet vs {args.compare_outputs}", ours, torch.load(args.compare_outputs, weights_only=True))

    if args.device == "cpu":
        flops = count_flops(model, inputs)
        # Best of the measurements before and after the FLOP count: on a shared machine a single one catches
        # other jobs' load and underestimates the peak (then the floor looks beatable).
        peak = max(matmul_peak_gflops(), peak_before)
        floor = flops / (peak * 1e9)
        print(f"  model FLOPs: {flops / 1e9:.1f} GFLOP ({flops / 2e9:.1f} GMAC); fp32 matmul peak {peak:.0f} GFLOP/s")
        print(f"  FLOP floor {floor * 1000:.0f} ms (target: within 2x):")
        for name, median in medians.items():
            print(f"    {name:16s} {median / floor:.2f}x the floor")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(inputs)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
