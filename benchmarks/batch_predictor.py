"""Images per second of a loop of ``DefaultPredictor`` calls against :class:`BatchPredictor`, on 320-px JPEG files,
in one process with alternating runs.

Usage::

    python benchmarks/batch_predictor.py                  # Mask R-CNN MobileNetV3-FPN 320, 24 images, 3 rounds
    python benchmarks/batch_predictor.py --quick          # 8 images, 1 round
    python benchmarks/batch_predictor.py --config-file configs/COCO/retinanet_mnv3_fpn_320.py --images 48

Both read the same files: the baseline does ``read_image`` then one ``DefaultPredictor`` call per image (what a
user writes today), :class:`BatchPredictor` decodes and resizes on its thread pool while the model runs and
post-processes (box rescaling, mask pasting) on the pool too. The model has RANDOM weights (no download); its
score threshold is set to 0 so that each image has up to 100 detections (with masks), as a trained model gives.
Images are 320 x 480 (the configs' test size: the resize keeps them). The ratio is images/s against the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.data.detection_utils import read_image  # noqa: E402
from libdet.engine import BatchPredictor, DefaultPredictor  # noqa: E402
from libdet.utils.env import cpu_model_name  # noqa: E402


def write_images(folder: Path, count: int, height: int, width: int) -> list[str]:
    """``count`` JPEG files of smooth random content (photo-like file sizes and decode cost)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        path = folder / f"{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def build_model(config_file: str) -> tuple[torch.nn.Module, dict]:
    cfg = LazyConfig.load(config_file)
    model = instantiate(cfg.model).eval()
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None:  # random weights score every class ~equally: keep the top 100 of them
        predictors = roi_heads.box_predictor
        for predictor in predictors if isinstance(predictors, torch.nn.ModuleList) else [predictors]:
            predictor.test_score_thresh = 0.0
    elif hasattr(model, "test_score_thresh"):
        model.test_score_thresh = 0.0
    aug = instantiate(cfg.dataloader.test.mapper.augmentations[0])
    sizes = dict(
        min_size_test=int(np.max(aug.short_edge_length)),
        max_size_test=int(aug.max_size),
        input_format=cfg.dataloader.test.mapper.image_format,
    )
    return model, sizes


def run_default(model, sizes, paths) -> tuple[float, float, int]:
    """(images/s, CPU seconds per image, detections) of a DefaultPredictor loop."""
    predictor = DefaultPredictor(model, **sizes)
    start, cpu = time.perf_counter(), time.process_time()
    detections = sum(len(predictor(read_image(p, format="BGR"))["instances"]) for p in paths)
    return len(paths) / (time.perf_counter() - start), (time.process_time() - cpu) / len(paths), detections


def run_batch(model, sizes, paths, batch_size: int, num_workers: int) -> tuple[float, float, int]:
    predictor = BatchPredictor(model, **sizes, batch_size=batch_size, num_workers=num_workers)
    start, cpu = time.perf_counter(), time.process_time()
    detections = sum(len(r.instances) for r in predictor.predict(paths))
    return len(paths) / (time.perf_counter() - start), (time.process_time() - cpu) / len(paths), detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=str(REPO_ROOT / "configs/COCO/mask_rcnn_mnv3_fpn_320.py"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is printed")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--variants", default="1x2,4x2,4x1", help="BatchPredictor batch_size x num_workers")
    parser.add_argument("--quick", action="store_true", help="8 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 8, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, sizes = build_model(args.config_file)
    variants = [tuple(int(x) for x in v.split("x")) for v in args.variants.split(",")]
    print(f"CPU: {cpu_model_name()}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print(f"config: {args.config_file}; {args.images} JPEG images 320x480; sizes {sizes}; {args.rounds} rounds")

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, 320, 480)
        run_default(model, sizes, paths[:2])  # warm-up (allocator, oneDNN primitives)
        timings: dict[str, list[tuple[float, float]]] = {}
        detections: dict[str, int] = {}
        for _ in range(args.rounds):
            ips, cpu, detections["DefaultPredictor loop"] = run_default(model, sizes, paths)
            timings.setdefault("DefaultPredictor loop", []).append((ips, cpu))
            for batch_size, num_workers in variants:
                name = f"BatchPredictor b={batch_size} w={num_workers}"
                ips, cpu, detections[name] = run_batch(model, sizes, paths, batch_size, num_workers)
                timings.setdefault(name, []).append((ips, cpu))
    base = statistics.median(ips for ips, _ in timings["DefaultPredictor loop"])
    # CPU s/image (all threads of this process) says whether the work itself changed; images/s also counts
    # the overlap, and on a machine loaded by other processes, a process with more threads gets more CPU.
    print(f"{'':34} {'images/s':>9} {'ratio':>6} {'CPU s/img':>10} {'detections':>11}")
    for name, values in timings.items():
        ips = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{name:34} {ips:9.2f} {ips / base:6.2f} {cpu:10.3f} {detections[name]:11d}")


if __name__ == "__main__":
    main()
