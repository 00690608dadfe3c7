"""COCOeval_opt (libdet's native COCO evaluation) vs pycocotools' COCOeval: time and ratio.

Usage::

    python benchmarks/coco_eval.py             # 5000 images, bbox and segm
    python benchmarks/coco_eval.py --quick     # 300 images, a few seconds
    python benchmarks/coco_eval.py --threads 2 --types bbox

Data (synthetic, seeded): 640 x 480 images, 80 categories, ~7 ground-truth objects per image (polygon
masks of 1-2 polygons, 10-100 vertices; ~3% crowd regions as uncompressed RLEs), sizes spread over the
small/medium/large ranges; ~50 scored detections per image (jittered copies of objects and random
boxes, compressed-RLE masks as a model's results would have them).

Timed region, the same for both: ``evaluate()`` + ``accumulate()`` on a freshly loaded ground-truth
``COCO`` and its ``loadRes`` detections (loading and ``summarize()`` excluded). pycocotools' time thus
includes converting the ground-truth polygons to RLEs (its ``evaluate()`` does it), and libdet's includes
flattening the annotations into arrays. Both must give identical ``stats`` and precision arrays.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libdet.evaluation.fast_eval_api import COCOeval_opt, native_coco_eval_available  # noqa: E402

HEIGHT, WIDTH = 480, 640
NUM_CATEGORIES = 80


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    k = int(rng.integers(10, 51))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.6, 1.0, k)
    xs = np.clip(x + w / 2 + np.cos(angles) * radius * w / 2, 0, WIDTH)
    ys = np.clip(y + h / 2 + np.sin(angles) * radius * h / 2, 0, HEIGHT)
    return np.stack([xs, ys], axis=1).round(2).reshape(-1).tolist()


def make_data(num_images: int, objects: int, detections: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": HEIGHT, "width": WIDTH, "file_name": f"{image_id:012d}.jpg"})
        boxes = []
        for _ in range(int(rng.poisson(objects))):
            side = float(np.exp(rng.uniform(np.log(8), np.log(300))))  # log-uniform: all three area ranges
            bw, bh = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, WIDTH - min(bw, WIDTH - 1)), rng.uniform(0, HEIGHT - min(bh, HEIGHT - 1))
            cat = int(rng.integers(1, NUM_CATEGORIES + 1))
            polygons = [_polygon(rng, x, y, bw, bh) for _ in range(1 if rng.random() < 0.85 else 2)]
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": cat,
                "iscrowd": 0,
                "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                "area": round(bw * bh * 0.75, 2),
            }
            if rng.random() < 0.03:
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, HEIGHT, WIDTH))
                flat = mask_utils.decode(rle).reshape(-1, order="F")
                bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
                counts = np.diff(bounds).tolist()
                counts = ([0] if flat[0] else []) + counts
                ann.update(iscrowd=1, segmentation={"size": [HEIGHT, WIDTH], "counts": counts})
            else:
                ann["segmentation"] = polygons
            anns.append(ann)
            boxes.append((x, y, bw, bh, cat))
        det_polys, det_meta = [], []
        for _ in range(int(rng.poisson(detections))):
            if boxes and rng.random() < 0.6:
                x, y, bw, bh, cat = boxes[int(rng.integers(len(boxes)))]
                jitter = rng.normal(0, 0.12, 4)
                x, y = x + jitter[0] * bw, y + jitter[1] * bh
                bw, bh = bw * np.exp(jitter[2]), bh * np.exp(jitter[3])
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, NUM_CATEGORIES + 1))
            else:
                bw, bh = float(rng.uniform(8, 200)), float(rng.uniform(8, 200))
                x, y = rng.uniform(0, WIDTH - bw), rng.uniform(0, HEIGHT - bh)
                cat = int(rng.integers(1, NUM_CATEGORIES + 1))
            det_polys.append(_polygon(rng, x, y, bw, bh))
            det_meta.append((cat, [float(x), float(y), float(bw), float(bh)], round(float(rng.random()), 3)))
        rles = mask_utils.frPyObjects(det_polys, HEIGHT, WIDTH) if det_polys else []
        for (cat, bbox, score), rle in zip(det_meta, rles):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": bbox,
                    "score": score,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                }
            )
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, results


def _load(dataset: dict, results: list[dict]) -> tuple[COCO, COCO]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
    return gt, dt


def _time(cls: type, dataset: dict, results: list[dict], iou_type: str) -> tuple[float, COCOeval]:
    gt, dt = _load(dataset, results)
    evaluator = cls(gt, dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        evaluator.evaluate()
        evaluator.accumulate()
        elapsed = time.perf_counter() - start
        evaluator.summarize()
    return elapsed, evaluator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 images instead of 5000")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for libdet (default 2)")
    parser.add_argument("--types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    args = parser.parse_args()
    if not native_coco_eval_available():
        print("the compiled coco_eval op is unavailable; nothing to compare")
        return 1
    num_images = args.images or (300 if args.quick else 5000)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dataset, results = make_data(num_images, objects=7, detections=50)
    print(
        f"data: {num_images} images ({HEIGHT}x{WIDTH}), {NUM_CATEGORIES} categories, "
        f"{len(dataset['annotations'])} ground-truth objects (polygons; crowd as RLE), {len(results)} detections "
        f"(generated in {time.perf_counter() - start:.1f}s)"
    )
    threads = torch.get_num_threads()
    print(f"timed: evaluate() + accumulate() from loaded COCO/loadRes objects; libdet with {threads} threads")
    ok = True
    for iou_type in args.types:
        _time(COCOeval_opt, *make_data(20, 7, 50, seed=1), iou_type)  # warm-up (the op is compiled/loaded)
        ours_s, ours = _time(COCOeval_opt, dataset, results, iou_type)
        ref_s, ref = _time(COCOeval, dataset, results, iou_type)
        same = np.array_equal(ours.stats, ref.stats) and all(
            np.array_equal(ours.eval[k], ref.eval[k]) for k in ("precision", "recall", "scores")
        )
        ok &= same
        print(
            f"{iou_type:5s} pycocotools {ref_s:8.2f}s   libdet {ours_s:7.2f}s   ratio {ref_s / ours_s:6.1f}x   "
            f"AP {ref.stats[0]:.4f}   identical stats/precision/recall/scores: {same}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
