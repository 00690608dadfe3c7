"""DETR R50 inference latency on CPU: libdet (projects/DETR) against Hugging Face transformers' implementation of
the same weights, in the same process.

Usage::

    python benchmarks/detr.py                  # one 800 x 1333 image, median of 5 runs each
    python benchmarks/detr.py --quick          # 320 x 512, 2 runs
    python benchmarks/detr.py --threads 2 --runs 10

Both models carry the same RANDOM weights (no download): a ``DetrForObjectDetection`` (transformers' own ResNet-50
backbone, COCO's 91 labels) is initialised randomly, its frozen BatchNorm statistics set to sane values, and it is
converted to libdet's ``projects/DETR/configs/detr_r50.py`` model with ``detr.weight_conversion.hf_to_libdet``.
The two outputs are compared (they must agree), then each model is timed on the same normalised, padded batch:
backbone + transformer + heads. libdet's number includes its own preprocessing and post-processing to
``Instances`` as well (normalisation, padding mask, softmax, box scaling), so the comparison favours HF slightly.
Needs ``transformers`` (the test extra).
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
sys.path.insert(0, str(REPO_ROOT / "projects" / "DETR"))

from detr.weight_conversion import hf_to_libdet  # noqa: E402

from libdet.config import LazyConfig, instantiate  # noqa: E402


def _hf_detr_r50():
    try:
        import transformers
    except ImportError as e:
        raise SystemExit(f"benchmarks/detr.py needs `transformers` (pip install 'libdet[test]'): {e}") from e
    config = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, num_labels=91)
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # FrozenBN statistics of a pretrained-looking network, so that activations stay finite
        for name, buf in model.named_buffers():
            if "backbone" in name and name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 4 + 8)
            elif "backbone" in name and name.endswith("running_mean"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.2)
        # transformers starts the last box layer at zero (every box at the image centre): give it weights
        for layer in (model.bbox_predictor.layers[-1], model.class_labels_classifier):
            layer.weight.normal_(0.0, 0.05, generator=g)
            layer.bias.normal_(0.0, 0.05, generator=g)
    return model


def _time_interleaved(fns: list, runs: int) -> list[float]:
    """Median seconds of each function, the runs interleaved (a, b, a, b, ...) so that a change in the load of a
    shared machine hits both alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="320 x 512 input, 2 runs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width, runs = (320, 512, 2) if args.quick else (800, 1333, args.runs)

    hf = _hf_detr_r50()
    cfg = LazyConfig.load(str(REPO_ROOT / "projects" / "DETR" / "configs" / "detr_r50.py"))
    model = instantiate(cfg.model).eval()
    model.load_state_dict(hf_to_libdet(hf.state_dict(), coco_classes=True))

    torch.manual_seed(2)
    inputs = [{"image": torch.rand(3, height, width) * 255}]
    with torch.no_grad():
        images, mask = model.preprocess_image(inputs)
        pixel_mask = (~mask).long()
        logits, boxes, _ = model.predict(images.tensor, mask)
        out = hf(pixel_values=images.tensor, pixel_mask=pixel_mask)
        # libdet's class rows are COCO's, gathered to contiguous ids: compare the boxes and the no-object logit
        box_diff = (boxes[-1] - out.pred_boxes).abs().max().item()
        logit_diff = (logits[-1][..., -1] - out.logits[..., -1]).abs().max().item()
        print(
            f"outputs agree: max |box diff| {box_diff:.2e}, max |no-object logit diff| {logit_diff:.2e} "
            f"(boxes in [{boxes[-1].min():.3f}, {boxes[-1].max():.3f}], box std {boxes[-1].std():.3f})"
        )
        if box_diff > 1e-3 or logit_diff > 1e-3:
            raise SystemExit("the converted models disagree; timings would not compare the same computation")

        t_libdet, t_hf = _time_interleaved(
            [lambda: model(inputs), lambda: hf(pixel_values=images.tensor, pixel_mask=pixel_mask)], runs
        )
    print(
        f"DETR R50 inference, {height}x{width}, {torch.get_num_threads()} threads, median of {runs} interleaved runs:"
    )
    print(f"  libdet (projects/DETR):             {t_libdet * 1000:8.1f} ms")
    print(f"  Hugging Face DetrForObjectDetection: {t_hf * 1000:8.1f} ms")
    print(f"  ratio libdet / HF: {t_libdet / t_hf:.3f}  (< 1: libdet faster)")


if __name__ == "__main__":
    main()
