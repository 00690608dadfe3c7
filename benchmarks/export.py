"""Mask R-CNN R50-FPN CPU latency: eager vs its exported forms, in one process.

Usage::

    python benchmarks/export.py                          # 800 x 1333, all paths, median of 5 runs
    python benchmarks/export.py --quick                  # 320 x 512, 2 runs
    python benchmarks/export.py --paths eager onnx --threads 2

Paths: ``eager`` (the model's ``inference``), ``deployable`` (libdet.export's tensor-only rewrite of the
inference glue, still eager PyTorch), ``torch_export`` (the ExportedProgram's module), ``aot_inductor``
(the program compiled by AOTInductor), ``onnx`` (onnxruntime, CPU provider) and ``onnx_custom_ops`` (the
same with RoIAlign as libdet's onnxruntime op, ``export_model(..., onnx_custom_ops=True)``; it needs
onnxruntime's C++ headers, see ``docs/deployment.md``, and is reported as failed without them). Each exported
path is exported at the benchmark's input size (``--dynamic`` exports dynamic shapes instead).

The model is ``configs/common/models/mask_rcnn_fpn.py`` with RANDOM weights, FrozenBN statistics
calibrated on the input (as ``benchmarks/inference.py``) and the classifier biased towards
``--confident-classes`` classes (default 3), so that, like a trained model, it has a few thousand (roi,
class) candidates above the 0.05 score threshold and keeps 100 detections, each with a mask pasted into the
image. (A score threshold of 0 instead makes all 80 000 pairs candidates; the exported models run one NMS
over all candidates, quadratic in their number, where torchvision's ``batched_nms`` loops over classes.)

Latency is the median of ``--runs`` runs after one warm-up run, timed in rounds that run every path once (so
that the load of a shared machine affects all paths alike); the ratios are eager time / path time.

Agreement with eager is checked on the benchmark image for every exported path, two ways: (1) exactly, as
the parity tests do (same detections in the same order: boxes within 1e-3 px, scores within 1e-4, mask IoU
>= 0.99); (2) matched: each eager detection is paired with an unpaired exported one of the same class and
box IoU >= 0.99 (greedily, by decreasing eager score). With random weights the ~3000 candidates of a
confident class have scores within a few 1e-3 of each other, so float rounding differences of a fused or
reordered computation can swap candidates across NMS decisions and the 100-detection cut; (2) then shows
whether the differences are confined to such near-ties: the unpaired detections are reported with their
scores next to the score at the cut.
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
from libdet.structures import Instances, pairwise_iou  # noqa: E402

PATHS = ("eager", "deployable", "torch_export", "aot_inductor", "onnx", "onnx_custom_ops")
#: Exported paths: (export format, export_model's onnx_custom_ops).
EXPORTED_PATHS = {
    "torch_export": ("torch_export", False),
    "aot_inductor": ("aot_inductor", False),
    "onnx": ("onnx", False),
    "onnx_custom_ops": ("onnx", True),
}


def _calibrate_frozen_bn():
    spec = importlib.util.spec_from_file_location("_bench_inference", REPO_ROOT / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.calibrate_frozen_bn


def _alternating_times(runners: dict, runs: int) -> dict[str, list[float]]:
    """Seconds of ``runs`` calls of each runner, after one warm-up call each, in rounds that call every runner
    once."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for fn in runners.values():
            fn()
        for _ in range(runs):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def matched_agreement(eager: Instances, exported: Instances, min_iou: float = 0.99) -> str:
    """One line: how many eager detections have an exported twin (same class, box IoU >= ``min_iou``,
    paired greedily by decreasing eager score), the largest score difference and smallest mask IoU of the
    pairs, and the scores of the unpaired detections next to the lowest kept score (the cut)."""
    eager, exported = eager.to("cpu"), exported.to("cpu")
    iou = pairwise_iou(eager.pred_boxes, exported.pred_boxes)
    iou[eager.pred_classes[:, None] != exported.pred_classes[None, :]] = 0.0
    pairs, taken = [], torch.zeros(len(exported), dtype=torch.bool)
    for i in torch.argsort(eager.scores, descending=True).tolist():
        candidates = torch.where(taken, torch.zeros_like(iou[i]), iou[i])
        j = int(candidates.argmax()) if len(exported) else -1
        if j >= 0 and candidates[j] >= min_iou:
            taken[j] = True
            pairs.append((i, j))
    line = f"{len(pairs)} of {len(eager)} eager detections paired with one of the {len(exported)} exported"
    if pairs:
        ei, xi = (torch.tensor(x) for x in zip(*pairs))
        line += f"; pairs: max |score| {(eager.scores[ei] - exported.scores[xi]).abs().max():.1e}"
        if eager.has("pred_masks"):
            a, b = eager.pred_masks[ei].flatten(1), exported.pred_masks[xi].flatten(1)
            inter, union = (a & b).sum(1), (a | b).sum(1)
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))
            line += f", min mask IoU {iou.min():.3f}"  # two empty masks agree
    unpaired_eager = sorted(set(range(len(eager))) - {i for i, _ in pairs})
    if unpaired_eager and len(eager):
        scores = eager.scores[unpaired_eager]
        line += (
            f"; unpaired eager scores {scores.min():.4f}..{scores.max():.4f} "
            f"(eager scores {eager.scores.min():.4f}..{eager.scores.max():.4f})"
        )
    return line


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
    # Every path is first built (and checked against eager), then all are timed in alternating rounds, so that
    # a slower or faster stretch of a shared machine affects every path alike.
    runners: dict[str, object] = {}
    if "eager" in args.paths:
        runners["eager"] = lambda: model(inputs)
    if "deployable" in args.paths:
        deployable = deployable_model(model)
        runners["deployable"] = lambda: deployable(batch)
    agreement: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path, (fmt, custom_ops) in EXPORTED_PATHS.items():
            if path not in args.paths:
                continue
            start = time.perf_counter()
            try:
                exported = export_model(
                    model, batch, fmt, Path(tmp) / path, dynamic=args.dynamic, onnx_custom_ops=custom_ops
                )
            except Exception as e:  # report and go on with the other paths
                print(f"  {path}: export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                continue
            export_seconds = time.perf_counter() - start
            diff = compare_to_eager(model, exported, [batch])
            problems = diff.check(1e-2 if fmt == "onnx" else 1e-3)
            verdict = "matches eager exactly" if not problems else "differs from eager: " + "; ".join(problems)
            print(f"  {path}: exported in {export_seconds:.0f} s; {verdict} ({diff.summary()})", flush=True)
            with torch.no_grad():
                eager_instances = model(inputs)[0]["instances"]
            exported_instances = exported.predict(batch)[0]["instances"]
            print(f"  {path}: matched: {matched_agreement(eager_instances, exported_instances)}", flush=True)
            agreement[path] = "exact" if not problems else "matched only"
            runners[path] = lambda exported=exported: exported(batch)
        times = _alternating_times(runners, runs)
    results = {path: statistics.median(seconds) for path, seconds in times.items()}
    for path, seconds in times.items():
        print(f"  {path}: " + ", ".join(f"{s * 1000:.0f}" for s in seconds) + " ms", flush=True)
    eager = results.get("eager")
    print(f"  {'path':<16}{'median ms':>12}{'eager / path':>14}  agreement with eager")
    for path, seconds in results.items():
        ratio = f"{eager / seconds:.2f}x" if eager else "-"
        print(f"  {path:<16}{seconds * 1000:>12.1f}{ratio:>14}  {agreement.get(path, '-')}")
    exported_paths = {p: s for p, s in results.items() if p in EXPORTED_PATHS}
    if eager and exported_paths:
        best = min(exported_paths, key=exported_paths.get)
        per_round = statistics.median(e / b for e, b in zip(times["eager"], times[best]))
        print(
            f"  fastest exported path: {best}, {eager / exported_paths[best]:.2f}x faster than eager "
            f"(median of the per-round ratios {per_round:.2f}x; agreement: {agreement[best]})"
        )


if __name__ == "__main__":
    main()
