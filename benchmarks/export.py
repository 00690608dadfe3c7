"""Mask R-CNN R50-FPN CPU latency: eager vs its exported forms, in one process.

Usage::

    python benchmarks/export.py                          # 800 x 1333, all paths, median of 5 runs
    python benchmarks/export.py --quick                  # 320 x 512, 2 runs
    python benchmarks/export.py --paths eager onnx --threads 2

Paths: ``eager`` (the model's ``inference``), ``deployable`` (libdet.export's tensor-only rewrite of the
inference glue, still eager PyTorch), ``torch_export`` (the ExportedProgram's module), ``aot_inductor``
(the program compiled by AOTInductor) and ``onnx`` (onnxruntime, CPU provider). Each exported path is
exported at the benchmark's input size (``--dynamic`` exports dynamic shapes instead).

The model is ``configs/common/models/mask_rcnn_fpn.py`` with RANDOM weights, FrozenBN statistics
calibrated on the input (as ``benchmarks/inference.py``) and the classifier biased towards
``--confident-classes`` classes (default 3), so that, like a trained model, it has a few thousand (roi,
class) candidates above the 0.05 score threshold and keeps 100 detections, each with a mask pasted into the
image. (A score threshold of 0 instead makes all 80 000 pairs candidates; the exported models run one NMS
over all candidates, quadratic in their number, where torchvision's ``batched_nms`` loops over classes.) Latency is the median of ``--runs`` runs after one warm-up run;
the ratios are eager time / path time.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.export import compare_to_eager, deployable_model, export_model  # noqa: E402

PATHS = ("eager", "deployable", "torch_export", "aot_inductor", "onnx")


def _calibrate_frozen_bn():
    spec = importlib.util.spec_from_file_location("_bench_inference", REPO_ROOT / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.calibrate_frozen_bn


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="320 x 512 input and 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--dynamic", action="store_true", help="export with dynamic batch / height / width")
    parser.add_argument("--confident-classes", type=int, default=3, help="classes biased to score above 0.05")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (320, 512) if args.quick else (800, 1333)
    runs = args.runs or (2 if args.quick else 5)

    cfg = LazyConfig.load(str(REPO_ROOT / "configs/common/models/mask_rcnn_fpn.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    # Random weights give every class ~1/81, below the 0.05 threshold. A trained model is confident in a few
    # classes: bias the logits of `--confident-classes` classes so that each roi is a candidate for them
    # (~1000 x k (roi, class) candidates before NMS, up to 100 detections with masks).
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[: args.confident_classes] += 4.0
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8).float()
    inputs = [{"image": image}]
    with torch.no_grad():
        _calibrate_frozen_bn()(model.backbone, model.preprocess_image(inputs).tensor)
    batch = image[None]

    print(
        f"Mask R-CNN R50-FPN (RANDOM weights, calibrated FrozenBN, {args.confident_classes} confident classes) on CPU"
    )
    print(
        f"  torch {torch.__version__}, threads {torch.get_num_threads()}, input 1 x 3 x {height} x {width}, {runs} runs"
    )
    results: dict[str, float] = {}
    with torch.inference_mode():
        if "eager" in args.paths:
            results["eager"] = _median_seconds(lambda: model(inputs), runs)
            print(f"  eager: {results['eager'] * 1000:.1f} ms", flush=True)
        if "deployable" in args.paths:
            deployable = deployable_model(model)
            results["deployable"] = _median_seconds(lambda: deployable(batch), runs)
            print(f"  deployable: {results['deployable'] * 1000:.1f} ms", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("torch_export", "aot_inductor", "onnx"):
            if path not in args.paths:
                continue
            start = time.perf_counter()
            try:
                exported = export_model(model, batch, path, Path(tmp) / path, dynamic=args.dynamic)
            except Exception as e:  # report and go on with the other paths
                print(f"  {path}: export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                continue
            export_seconds = time.perf_counter() - start
            diff = compare_to_eager(model, exported, [batch])
            print(f"  {path}: exported in {export_seconds:.0f} s; vs eager: {diff.summary()}", flush=True)
            results[path] = _median_seconds(lambda exported=exported: exported(batch), runs)
            print(f"  {path}: {results[path] * 1000:.1f} ms", flush=True)
    eager = results.get("eager")
    print(f"  {'path':<14}{'median ms':>12}{'eager / path':>14}")
    for path, seconds in results.items():
        ratio = f"{eager / seconds:.2f}x" if eager else "-"
        print(f"  {path:<14}{seconds * 1000:>12.1f}{ratio:>14}")
    exported_paths = {p: s for p, s in results.items() if p in ("torch_export", "aot_inductor", "onnx")}
    if eager and exported_paths:
        best = min(exported_paths, key=exported_paths.get)
        print(f"  fastest exported path: {best}, {eager / exported_paths[best]:.2f}x faster than eager")


if __name__ == "__main__":
    main()
