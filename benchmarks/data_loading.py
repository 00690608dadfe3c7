"""Training data loader throughput: mapped images per second with 1 and 2 workers.

Usage::

    python benchmarks/data_loading.py                    # shapes_train, default training augmentations
    python benchmarks/data_loading.py --quick            # a few batches, a few seconds
    python benchmarks/data_loading.py --dataset coco_2017_train --workers 1,2,4

The loader is the resumable ``build_detection_train_loader`` with ``DatasetMapper`` (polygon masks) and
``build_augmentation(is_train=True)`` (ResizeShortestEdge (800,), max 1333, horizontal flip). The first
batches (worker start-up) are excluded from the timing; the ratio column is images/s relative to the
first worker count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libdet.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts  # noqa: E402
from libdet.data.detection_utils import build_augmentation  # noqa: E402


def measure(dicts: list, num_workers: int, batch_size: int, num_batches: int, warmup: int, min_size: int) -> float:
    """Mapped images per second over ``num_batches`` batches after ``warmup`` batches."""
    mapper = DatasetMapper(
        is_train=True,
        augmentations=build_augmentation(is_train=True, min_size=(min_size,)),
        image_format="BGR",
        use_instance_mask=True,
    )
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=batch_size, num_workers=num_workers, seed=0
    )
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return num_batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes_train", help="registered dataset name")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-batches", type=int, default=50)
    parser.add_argument("--min-size", type=int, default=800, help="training shortest edge")
    parser.add_argument("--quick", action="store_true", help="few batches (smoke run)")
    args = parser.parse_args()
    num_batches, warmup = (5, 2) if args.quick else (args.num_batches, 5)

    dicts = get_detection_dataset_dicts(args.dataset)
    print(
        f"dataset {args.dataset}: {len(dicts)} images; batch size {args.batch_size}; {num_batches} timed "
        f"batches after {warmup} warm-up; shortest edge {args.min_size}"
    )
    results = []
    for w in (int(x) for x in args.workers.split(",")):
        results.append((w, measure(dicts, w, args.batch_size, num_batches, warmup, args.min_size)))
    base = results[0][1]
    print(f"{'workers':>8} {'images/s':>10} {'ratio':>7}")
    for w, ips in results:
        print(f"{w:>8} {ips:>10.1f} {ips / base:>7.2f}")


if __name__ == "__main__":
    main()
