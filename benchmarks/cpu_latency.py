"""CPU latency per 320-px image and shapes-set box AP of the efficient (MobileNetV3-FPN, 320 px) detectors.

Usage::

    python benchmarks/cpu_latency.py                  # train each shapes variant with its config's schedule, measure
    python benchmarks/cpu_latency.py --quick          # 20 training iterations, 16 val images: a smoke run
    python benchmarks/cpu_latency.py --train-iters 0  # reuse <output-dir>/<config>/model_final.pth from a former run
    python benchmarks/cpu_latency.py --configs configs/shapes/retinanet_mnv3_fpn_320_cpu.py --threads 2

For each config (default: the ``configs/shapes/*_fpn_320_cpu.py`` variants of the ``configs/COCO/*_fpn_320.py``
detectors: MobileNetV3-Large Faster/Mask R-CNN, RetinaNet, FCOS and RegNetX-400MF Faster R-CNN; same architectures
with 3 classes):

1. train it from scratch on the synthetic shapes set with ``tools/lazyconfig_train_net.py`` (``--train-iters``
   iterations; default: the config's ``train.max_iter``) into ``<output-dir>/<config name>/``;
2. run every inference mode on the same shapes-val images (resized by the config's test mapper to a 320-px
   shorter side), one image per call, the modes interleaved image by image so that a change of machine load
   affects them alike, and report per mode the median latency of a call (pre-processing inside the model,
   backbone, heads, post-processing; not data loading), the median CPU time this process spent in it (all its
   threads; less sensitive than the wall time to other jobs on the cores) and the box AP of its detections
   (COCO AP on those images).

Modes:

* ``fp32``: eager float32, the library's default.
* ``fast``: the CPU fast-path transforms that help on this machine, each first timed alone against fp32 on one
  image and kept only when it is at least 3% faster: BatchNorm folded into the preceding convolution,
  ``channels_last`` weights, bfloat16 autocast (only offered where the CPU computes bf16 natively: AVX512-BF16 or
  AMX), ``torch.compile`` of the backbone (with ``--compile``; its compilation takes minutes on a loaded machine).
  The last three come from ``libdet.engine.fast_mode.optimize_for_inference`` when the library has it.
* ``int8``: post-training static int8 quantization of the backbone and FPN (``libdet.quantization.quantize_pt2e``:
  PT2E with torchao's x86 Inductor quantizer, calibrated on shapes-train images, compiled by Inductor); the heads
  and post-processing stay float. Needs torchao; without it the line says int8 is not available.

Numbers depend on the machine's load: the environment block prints the load average before and after. Run it on an
idle machine for numbers to quote (``nice`` and other jobs on the cores inflate every latency).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from libdet.checkpoint import DetectionCheckpointer  # noqa: E402
from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.data import get_detection_dataset_dicts  # noqa: E402
from libdet.evaluation import COCOEvaluator  # noqa: E402
from libdet.layers.conv_bn_folding import fold_conv_batchnorm  # noqa: E402
from libdet.utils.env import cpu_has_native_bf16, cpu_model_name  # noqa: E402

DEFAULT_CONFIGS = [
    "configs/shapes/faster_rcnn_mnv3_fpn_320_cpu.py",
    "configs/shapes/mask_rcnn_mnv3_fpn_320_cpu.py",
    "configs/shapes/retinanet_mnv3_fpn_320_cpu.py",
    "configs/shapes/fcos_mnv3_fpn_320_cpu.py",
    "configs/shapes/faster_rcnn_regnetx_400mf_fpn_320_cpu.py",
]
MIN_SPEEDUP = 1.03  # a transform must save at least 3% to be kept


def environment_lines(threads: int) -> list[str]:
    import torchvision

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return [
        f"CPU: {cpu_model_name()}, {os.cpu_count()} logical cores, native bf16: {cpu_has_native_bf16()}, "
        f"oneDNN (mkldnn): {torch.backends.mkldnn.is_available()}, capability: {torch.backends.cpu.get_cpu_capability()}",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}",
        f"intra-op threads: {threads}, inter-op threads: {torch.get_num_interop_threads()}",
        f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load)}",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Training and data


def train_variant(config_file: str, iters: int, output_dir: Path, threads: int) -> Path:
    """Train ``config_file`` for ``iters`` iterations with the library's trainer (a subprocess), no evaluation."""
    output_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools/lazyconfig_train_net.py"),
        "--config-file",
        str(REPO_ROOT / config_file),
        f"train.max_iter={iters}",
        f"train.output_dir={output_dir}",
        f"train.checkpointer.period={iters}",
        f"train.log_period={max(1, min(20, iters // 5))}",
        "dataloader.evaluator=null",  # no evaluation in training: this script evaluates every mode itself
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(output_dir / "train_stdout.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        tail = (output_dir / "train_stdout.log").read_text().splitlines()[-20:]
        raise RuntimeError(f"training {config_file} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    print(f"  trained {iters} iterations in {time.perf_counter() - start:.0f} s -> {output_dir}/model_final.pth")
    return output_dir / "model_final.pth"


def load_inputs(cfg, names: str, num_images: int) -> list[dict]:
    """The first ``num_images`` images of dataset ``names`` through the config's test mapper (320-px shorter side)."""
    dicts = get_detection_dataset_dicts(names, filter_empty=False)[:num_images]
    mapper = instantiate(cfg.dataloader.test.mapper)
    return [mapper(copy.deepcopy(d)) for d in dicts]


# ---------------------------------------------------------------------------------------------------------------
# Fast-path transforms (each returns a new model; the fp32 model stays untouched)


def fold_conv_bn(model: nn.Module) -> nn.Module:
    """A copy with every eval-mode BatchNorm / FrozenBN folded into the convolution before it (libdet's ``Conv2d``
    norms and torchvision's Conv-BN-activation blocks): one op instead of two, exact up to rounding."""
    model = copy.deepcopy(model).eval()
    fold_conv_batchnorm(model)
    return model


def to_channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def compile_backbone(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    model.backbone = torch.compile(model.backbone)
    return model


@dataclass
class Mode:
    """An inference mode: a model and the context its calls run in."""

    name: str
    model: nn.Module
    bf16: bool = False
    transforms: list[str] = field(default_factory=list)
    # False: run under no_grad instead of inference_mode (the int8 program is compiled with Inductor's weight
    # freezing, which libdet.quantization runs under no_grad)
    inference_mode: bool = True
    latency_valid: bool = True  # False: the latency is not that of the mode's intended kernels

    def __call__(self, inputs: list[dict]) -> list[dict]:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        grad_ctx = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with grad_ctx, ctx:
            return self.model(inputs)


def time_call(fn: Callable[[list[dict]], list[dict]], inputs: list[dict]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    start, cpu_start = time.perf_counter(), time.process_time()
    fn(inputs)
    return time.perf_counter() - start, time.process_time() - cpu_start


def median_alternating(modes: list[Mode], inputs: list[dict], rounds: int) -> list[float]:
    """Median seconds per call of each mode on ``inputs``, the modes alternating call by call. With one intra-op
    thread the CPU time of this process is compared (other jobs on the cores inflate the wall time, not it);
    with several, the wall time (CPU time adds the threads up)."""
    use_cpu_time = torch.get_num_threads() == 1
    times: list[list[float]] = [[] for _ in modes]
    for mode in modes:
        mode(inputs)  # warm-up (and compilation)
    for _ in range(rounds):
        for t, mode in zip(times, modes):
            wall, cpu = time_call(mode, inputs)
            t.append(cpu if use_cpu_time else wall)
    return [statistics.median(t) for t in times]


def _fast_mode_transform(**options) -> Callable[[nn.Module], nn.Module]:
    """One option of ``libdet.engine.fast_mode.optimize_for_inference`` (the others off), on a copy."""
    from libdet.engine.fast_mode import optimize_for_inference

    settings = dict(bf16=False, channels_last=False, compile=False, fold_frozen_bn=False) | options
    return lambda model: optimize_for_inference(copy.deepcopy(model), **settings)


def fast_path_candidates(try_compile: bool) -> list[tuple[str, Callable[[nn.Module], nn.Module], bool]]:
    """(name, model transform, needs whole-model bf16 autocast) of each fast-path transform offered here.

    libdet's ``optimize_for_inference`` (``libdet.engine.fast_mode``) provides channels_last, bf16 autocast
    scoped to the backbone and heads (box decoding, NMS and scores stay float32) and ``torch.compile``; where it
    is missing, this script applies the plain equivalents. BatchNorm folding is this script's
    :func:`fold_conv_bn`, which also folds the BatchNorms of torchvision's blocks (MobileNetV3)."""
    have_fast_mode = importlib.util.find_spec("libdet.engine.fast_mode") is not None
    candidates = [("fold-BN", fold_conv_bn, False)]
    if have_fast_mode:
        candidates.append(("channels_last", _fast_mode_transform(channels_last=True), False))
        if cpu_has_native_bf16():
            candidates.append(("bf16 (fast_mode)", _fast_mode_transform(bf16=True), False))
        if try_compile:
            candidates.append(("torch.compile(backbone)", _fast_mode_transform(compile=True), False))
        return candidates
    candidates.append(("channels_last", to_channels_last, False))
    if cpu_has_native_bf16():
        candidates.append(("bf16 autocast", copy.deepcopy, True))
    if try_compile:
        candidates.append(("torch.compile(backbone)", compile_backbone, False))
    return candidates


def choose_fast_path(model: nn.Module, probe: list[dict], rounds: int, try_compile: bool) -> tuple[Mode, list[str]]:
    """Time each transform alone against fp32 on ``probe`` (see :func:`median_alternating`); combine those that save
    >= 3% (in the order listed, compilation last). Returns the combined mode and a log line per candidate."""
    base = Mode("fp32", model)
    unit = " (CPU time)" if torch.get_num_threads() == 1 else " (wall)"
    kept, log = [], []
    for name, transform, bf16 in fast_path_candidates(try_compile):
        candidate = Mode(name, transform(model), bf16=bf16)
        base_s, cand_s = median_alternating([base, candidate], probe, rounds)
        speedup = base_s / cand_s
        keep = speedup >= MIN_SPEEDUP
        log.append(
            f"    {name:<24} {1000 * cand_s:7.1f} ms vs fp32 {1000 * base_s:7.1f} ms{unit}: x{speedup:.2f} -> "
            f"{'kept' if keep else 'off'}"
        )
        if keep:
            kept.append((name, transform, bf16))
    fast_model, bf16 = model, False
    for _name, transform, use_bf16 in kept:
        fast_model = transform(fast_model)
        bf16 = bf16 or use_bf16
    return Mode("fast", fast_model, bf16=bf16, transforms=[k[0] for k in kept]), log


def build_int8_mode(model: nn.Module, calibration: list[dict]) -> tuple[Mode | None, str]:
    """An int8 mode: the backbone (bottom-up + FPN) statically quantized with PT2E (``libdet.quantization``,
    calibrated on ``calibration``, compiled by Inductor), the heads and post-processing in float. Returns
    (None, why) when that is not available here."""
    try:
        from libdet.quantization import quantize_pt2e
    except ImportError as e:
        return None, f"not available (libdet.quantization cannot be imported: {e})"
    if importlib.util.find_spec("torchao") is None:
        return None, "not available (needs torchao: pip install 'libdet[quantization]')"
    start = time.perf_counter()
    quantized = quantize_pt2e(model, [[item] for item in calibration], compile=True)
    mode = Mode("int8", quantized, transforms=["PT2E x86, Inductor"], inference_mode=False)
    try:
        mode([calibration[0]])  # Inductor compiles on the first call
    except Exception as e:  # a compiler failure of any kind: report it, keep the int8 AP measurable
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
        # The uncompiled program computes the same int8 numbers with explicit quantize/dequantize steps in float:
        # its AP is the int8 AP, its latency says nothing about int8 kernels.
        quantized = quantize_pt2e(model, [[item] for item in calibration], compile=False)
        mode = Mode("int8", quantized, transforms=["PT2E x86, NOT compiled"], inference_mode=False)
        mode.latency_valid = False
        return mode, f"Inductor compilation failed ({reason}); AP from the uncompiled int8 program, no int8 latency"
    return mode, f"quantized and compiled in {time.perf_counter() - start:.0f} s ({len(calibration)} train images)"


# ---------------------------------------------------------------------------------------------------------------


def evaluate_modes(cfg, modes: list[Mode], inputs: list[dict]) -> tuple[list[float], list[float], list[float]]:
    """Run every mode on every image (alternating), returning each mode's median latency (s), median CPU time of
    this process per call (s; all its threads) and box AP."""
    dataset_name = cfg.dataloader.test.dataset.names
    evaluators = [COCOEvaluator(dataset_name, tasks=("bbox",), distributed=False) for _ in modes]
    for evaluator in evaluators:
        evaluator.reset()
    for mode in modes:  # warm-up
        mode([inputs[0]])
    times: list[list[float]] = [[] for _ in modes]
    cpu_times: list[list[float]] = [[] for _ in modes]
    for item in inputs:
        for mode, evaluator, t, c in zip(modes, evaluators, times, cpu_times):
            start, cpu_start = time.perf_counter(), time.process_time()
            outputs = mode([item])
            t.append(time.perf_counter() - start)
            c.append(time.process_time() - cpu_start)
            evaluator.process([item], [{"instances": outputs[0]["instances"].to("cpu")}])
    img_ids = [item["image_id"] for item in inputs]
    aps = []
    for evaluator in evaluators:
        results = evaluator.evaluate(img_ids=img_ids) or {}
        aps.append(float(results.get("bbox", {}).get("AP", float("nan"))))
    return [statistics.median(t) for t in times], [statistics.median(c) for c in cpu_times], aps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 training iterations, 16 val images, 3 probe rounds, 8 calibration images",
    )
    parser.add_argument("--train-iters", type=int, default=None, help="0: reuse model_final.pth (default: config's)")
    parser.add_argument("--val-images", type=int, default=None, help="shapes-val images measured (default 200)")
    parser.add_argument("--probe-rounds", type=int, default=None, help="timed calls per transform probe (default 10)")
    parser.add_argument("--calib-images", type=int, default=None, help="int8 calibration images (default 64)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: all cores)")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile of the backbone")
    parser.add_argument("--no-int8", action="store_true", help="skip int8 quantization (minutes per model)")
    parser.add_argument("--output-dir", default=str(REPO_ROOT / "output/cpu_latency"))
    args = parser.parse_args()
    train_iters = args.train_iters if args.train_iters is not None else (20 if args.quick else None)
    val_images = args.val_images or (16 if args.quick else 200)
    probe_rounds = args.probe_rounds or (3 if args.quick else 10)
    calib_images = args.calib_images or (8 if args.quick else 64)

    torch.set_num_threads(args.threads)
    print("Environment")
    for line in environment_lines(args.threads):
        print("  " + line)
    summary = []
    for config_file in args.configs:
        name = Path(config_file).stem
        print(f"\n{config_file}")
        cfg = LazyConfig.load(str(REPO_ROOT / config_file))
        iters = int(cfg.train.max_iter) if train_iters is None else train_iters
        out_dir = Path(args.output_dir) / name
        weights = out_dir / "model_final.pth"
        if iters > 0:
            weights = train_variant(config_file, iters, out_dir, args.threads)
        elif not weights.is_file():
            raise FileNotFoundError(f"--train-iters 0 reuses {weights}, which does not exist: train first.")
        model = instantiate(cfg.model).eval()
        DetectionCheckpointer(model).load(str(weights))

        inputs = load_inputs(cfg, cfg.dataloader.test.dataset.names, val_images)
        sizes = sorted({tuple(x["image"].shape[1:]) for x in inputs})
        print(
            f"  {len(inputs)} shapes-val images, model input sizes (H, W): {sizes[:4]}{' ...' if len(sizes) > 4 else ''}"
        )
        fast, log = choose_fast_path(model, [inputs[0]], probe_rounds, args.compile)
        print("  fast-path probes (one image):")
        print("\n".join(log))
        modes = [Mode("fp32", model), fast]
        if args.no_int8:
            int8, int8_note = None, "skipped (--no-int8)"
        else:
            calibration = load_inputs(cfg, cfg.dataloader.train.dataset.names, calib_images)
            int8, int8_note = build_int8_mode(model, calibration)
        print(f"  int8: {int8_note}")
        if int8 is not None:
            modes.append(int8)
        latencies, cpu_times, aps = evaluate_modes(cfg, modes, inputs)
        for mode, latency, cpu_time, ap in zip(modes, latencies, cpu_times, aps):
            detail = f" ({', '.join(mode.transforms) or 'no transform helped: fp32'})" if mode.name != "fp32" else ""
            shown = (
                f"{1000 * latency:7.1f} ms/image (CPU {1000 * cpu_time:6.1f} ms)"
                if mode.latency_valid
                else f"{'n/a':>7} ms/image{'':>17}"
            )
            print(f"  {mode.name:<5} {shown}  box AP {ap:5.1f}{detail}")
        summary.append((name, iters, modes, latencies, cpu_times, aps))

    print("\nSummary: median wall ms / CPU ms of this process per 320-px image, and box AP on the measured images")
    header = "".join(f" {m + ' ms (CPU)':>17} {'AP':>5}" for m in ("fp32", "fast", "int8"))
    print(f"  {'config':<38} {'iters':>6}{header}")
    for name, iters, modes, latencies, cpu_times, aps in summary:
        cols = ""
        for i in range(3):
            if i >= len(modes):
                cols += f" {'n/a':>17} {'n/a':>5}"
            elif not modes[i].latency_valid:
                cols += f" {'n/a':>17} {aps[i]:5.1f}"
            else:
                cols += f" {1000 * latencies[i]:8.1f} ({1000 * cpu_times[i]:6.1f}) {aps[i]:5.1f}"
        print(f"  {name:<38} {iters or 'reused':>6}{cols}")
    for line in environment_lines(args.threads)[-1:]:
        print("  after: " + line)


if __name__ == "__main__":
    main()
