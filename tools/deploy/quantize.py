#!/usr/bin/env python
"""Int8 post-training quantization of a lazy config's model, with the box AP and latency before and after.

    python tools/deploy/quantize.py --config-file configs/shapes/mask_rcnn_cpu.py --calib-images 64 \\
        --method pt2e --output quantized/ train.init_checkpoint=output/shapes_mask_rcnn_cpu/model_final.pth

* builds ``cfg.model`` on the CPU and loads ``train.init_checkpoint`` (required);
* calibrates on the first ``--calib-images`` images of the config's test loader (``dataloader.test``);
* evaluates the float and the quantized model on the test set with ``dataloader.evaluator`` (as
  ``lazyconfig_train_net.py --eval-only`` does) and times both on single images (median of the first
  ``--latency-images`` test images, after warm-up);
* ``--method pt2e`` (default): the backbone is quantized with torchao's PT2E flow (``X86InductorQuantizer``) and
  compiled with Inductor; everything after the backbone stays float. Writes ``<output>/backbone_int8.pt2``
  (reload with ``libdet.quantization.load_quantized_backbone`` into a model built from the same config);
* ``--method onnx``: the model is exported to ONNX (``<output>/float/``) and quantized by onnxruntime
  (``<output>/int8/``, QDQ); both run in onnxruntime, next to the eager float model for reference.

``<output>/quantization_report.json`` holds the APs, latencies and settings. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("libdet.tools.quantize")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a lazy config (.py or .yaml)")
    parser.add_argument("--calib-images", type=int, default=64, help="number of test images to calibrate on")
    parser.add_argument("--method", choices=("pt2e", "onnx"), default="pt2e")
    parser.add_argument("--output", required=True, help="folder for the quantized model and the report")
    parser.add_argument(
        "--onnx-custom-ops",
        action="store_true",
        help="(--method onnx) the int8 model runs its RoIAlign with libdet's onnxruntime op (docs/deployment.md)",
    )
    parser.add_argument("--latency-images", type=int, default=30, help="test images to time each model on")
    parser.add_argument("--no-compile", action="store_true", help="pt2e: run the quantized backbone uncompiled")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return parser


def _select(cfg: Any, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def build_model(cfg: Any) -> torch.nn.Module:
    """``cfg.model`` on the CPU in eval mode with ``train.init_checkpoint`` loaded.

    Raises:
        ValueError: no ``train.init_checkpoint``.
        FileNotFoundError: the weights file does not exist.
    """
    from libdet.checkpoint import load_config_weights
    from libdet.config import instantiate

    model = instantiate(cfg.model).cpu()
    load_config_weights(model, cfg, caller="quantize")
    return model.eval()


def evaluate(cfg: Any, predict: Callable[[list[dict]], list[dict]]) -> dict[str, Any]:
    """The config's evaluator's results for ``predict`` on the config's test loader."""
    from libdet.config import instantiate
    from libdet.evaluation import inference_on_dataset

    return dict(inference_on_dataset(predict, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)))


def median_latency_ms(
    predictors: dict[str, Callable[[list[dict]], list[dict]]], batches: list[list[dict]], warmup: int = 3
) -> dict[str, float]:
    """Median wall time per batch in ms of each predictor, after ``warmup`` calls (which also compile).

    The predictors take turns on each batch, so that a change of machine load during the measurement
    affects all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in predictors}
    with torch.no_grad():
        for i, batch in enumerate(itertools.chain(batches[:warmup], batches)):
            for name, predict in predictors.items():
                start = time.perf_counter()
                predict(batch)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _first_batches(loader: Iterable[list[dict]], num_images: int) -> list[list[dict]]:
    """The first batches of ``loader`` holding ``num_images`` images in all."""
    batches, count = [], 0
    for batch in loader:
        if count >= num_images:
            break
        batches.append(batch[: num_images - count])
        count += len(batches[-1])
    return batches


def _box_ap(results: dict[str, Any]) -> float:
    return float(results.get("bbox", {}).get("AP", float("nan")))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from libdet.utils.file_io import atomic_write

    with atomic_write(str(path), "w") as f:
        json.dump(data, f, indent=2)


def run_pt2e(cfg: Any, model: torch.nn.Module, calib: list[list[dict]], timing: list[list[dict]], args) -> dict:
    from libdet.quantization import quantize_pt2e, save_quantized_backbone

    start = time.perf_counter()
    quantized = quantize_pt2e(model, calib, compile=not args.no_compile)
    quantize_s = time.perf_counter() - start
    # Timing first: its warm-up compiles the backbone, so the evaluation below runs compiled.
    latency = median_latency_ms({"float_eager": model, "int8": quantized}, timing)
    results = {"float_eager": evaluate(cfg, model), "int8": evaluate(cfg, quantized)}
    path = save_quantized_backbone(quantized.backbone, Path(args.output) / "backbone_int8.pt2")
    return {
        "artefact": str(path),
        "quantize_seconds": quantize_s,
        "compiled": not args.no_compile,
        "latency_ms": latency,
        "results": results,
    }


def run_onnx(cfg: Any, model: torch.nn.Module, calib: list[list[dict]], timing: list[list[dict]], args) -> dict:
    from libdet.export import export_model
    from libdet.quantization import ExportedPredictor, quantize_onnx

    images = [x for batch in calib for x in batch]
    exported = export_model(model, images[0]["image"], "onnx", Path(args.output) / "float")
    start = time.perf_counter()
    quantized = quantize_onnx(
        Path(args.output) / "float", images, Path(args.output) / "int8", onnx_custom_ops=args.onnx_custom_ops
    )
    quantize_s = time.perf_counter() - start
    float_onnx, int8_onnx = ExportedPredictor(exported), ExportedPredictor(quantized)
    latency = median_latency_ms({"float_eager": model, "float_onnx": float_onnx, "int8": int8_onnx}, timing)
    results = {
        "float_eager": evaluate(cfg, model),
        "float_onnx": evaluate(cfg, float_onnx),
        "int8": evaluate(cfg, int8_onnx),
    }
    return {"artefact": str(quantized.path), "quantize_seconds": quantize_s, "latency_ms": latency, "results": results}


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Quantize, evaluate, time; writes and returns the report."""
    from libdet.config import LazyConfig, instantiate
    from libdet.utils.logger import setup_logger

    setup_logger(name="libdet")
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"quantize: config file {args.config_file!r} does not exist.")
    if args.calib_images < 1:
        raise ValueError(f"quantize: --calib-images must be >= 1, got {args.calib_images}.")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), list(args.opts or []))
    for key in ("model", "dataloader.test", "dataloader.evaluator"):
        if _select(cfg, key) is None:
            raise ValueError(f"quantize: config {args.config_file!r} has no `{key}`.")
    Path(args.output).mkdir(parents=True, exist_ok=True)
    model = build_model(cfg)
    loader = instantiate(cfg.dataloader.test)
    calib = _first_batches(loader, args.calib_images)
    timing = [[x] for batch in _first_batches(loader, args.latency_images) for x in batch]
    run = run_pt2e if args.method == "pt2e" else run_onnx
    report = run(cfg, model, calib, timing, args)
    report.update(
        config_file=args.config_file,
        overrides=list(args.opts or []),
        method=args.method,
        calibration_images=sum(len(b) for b in calib),
        torch_threads=torch.get_num_threads(),
    )
    _write_json(Path(args.output) / "quantization_report.json", report)

    float_ap, int8_ap = _box_ap(report["results"]["float_eager"]), _box_ap(report["results"]["int8"])
    print(
        f"\nint8 quantization ({args.method}, {report['calibration_images']} calibration images, "
        f"{report['torch_threads']} threads):"
    )
    for name, ms in report["latency_ms"].items():
        print(f"  {name:12s} box AP {_box_ap(report['results'][name]):6.2f}   median latency {ms:8.1f} ms/image")
    print(f"  box AP change int8 - float: {int8_ap - float_ap:+.2f};  saved {report['artefact']}")
    return report


if __name__ == "__main__":
    main(get_parser().parse_args(sys.argv[1:]))
