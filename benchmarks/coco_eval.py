"""COCOeval_opt (libdet's native COCO evaluation) vs pycocotools' COCOeval: time and ratio.

Usage::

    python benchmarks/coco_eval.py             # 5000 images, bbox and segm
    python benchmarks/coco_eval.py --quick     # 300 images, a few seconds
    python benchmarks/coco_eval.py --threads 2 --types bbox
    python benchmarks/coco_eval.py --end-to-end   # COCOEvaluator vs pycocotools as a user runs it, 1500 images

Data (synthetic, seeded): 640 x 480 images, 80 categories, ~7 ground-truth objects per image (polygon
masks of 1-2 polygons, 10-100 vertices; ~3% crowd regions as uncompressed RLEs), sizes spread over the
small/medium/large ranges; ~50 scored detections per image (jittered copies of objects and random
boxes, compressed-RLE masks as a model's results would have them).

Timed region, the same for both: ``evaluate()`` + ``accumulate()`` on a freshly loaded ground-truth
``COCO`` and its ``loadRes`` detections (loading and ``summarize()`` excluded). pycocotools' time thus
includes converting the ground-truth polygons to RLEs (its ``evaluate()`` does it), and libdet's includes
flattening the annotations into arrays. Both must give identical ``stats`` and precision arrays.

``--end-to-end`` (default 1500 images) times what a user waits for instead. libdet: ``COCOEvaluator.process()``
on model-output-like ``Instances`` (float32 XYXY boxes, scores, contiguous classes, full-image bool masks; the
masks are decoded from the generated RLEs outside the timed region), then ``COCOEvaluator.evaluate()`` with
``output_dir`` set (ground-truth json loaded, predictions and results files written, bbox and segm evaluated).
This runs first in the process, so the first evaluation's imports and the op's load are counted (the op is
built beforehand in a subprocess, as a previous run would have left it). pycocotools: the same results json
(``coco_instances_results.json`` as the evaluator wrote it) loaded from disk, ``COCO(gt json)``, then for bbox
and segm (``bbox`` dropped so that mask areas set the area ranges, as ``COCOEvaluator`` does) ``loadRes``,
``evaluate()``, ``accumulate()``, ``summarize()``. The AP metrics must be bit-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def _environment() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    from importlib.metadata import PackageNotFoundError, version

    try:
        pycocotools_version = version("pycocotools")
    except PackageNotFoundError:
        pycocotools_version = "?"
    return (
        f"env: {cpu}, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"pycocotools {pycocotools_version}, python {platform.python_version()}"
    )


def _model_outputs(results: list[dict], num_images: int) -> list[tuple[int, list[dict]]]:
    """The generated results of each image, grouped (image id, results); see :func:`_instances`."""
    by_image: dict[int, list[dict]] = {i: [] for i in range(1, num_images + 1)}
    for r in results:
        by_image[r["image_id"]].append(r)
    return list(by_image.items())


def _instances(image_results: list[dict]) -> Any:
    """An ``Instances`` as a model returns it: float32 XYXY boxes, scores, contiguous classes, bool masks."""
    from libdet.structures import Boxes, Instances

    n = len(image_results)
    xywh = np.asarray([r["bbox"] for r in image_results], dtype=np.float64).reshape(n, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    rles = [{"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()} for r in image_results]
    masks = mask_utils.decode(rles) if rles else np.zeros((HEIGHT, WIDTH, 0), dtype=np.uint8)
    instances = Instances((HEIGHT, WIDTH))
    instances.pred_boxes = Boxes(torch.from_numpy(xyxy).float())
    instances.scores = torch.tensor([r["score"] for r in image_results], dtype=torch.float32)
    instances.pred_classes = torch.tensor([r["category_id"] - 1 for r in image_results], dtype=torch.int64)
    # numpy's conversion, not torch's: with several threads a torch op on the stack leaves OpenMP workers
    # spinning for a few ms afterwards, CPU time that would be counted in the process() call timed next
    instances.pred_masks = torch.from_numpy(masks.transpose(2, 0, 1).astype(bool, order="C"))
    return instances


def _pycocotools_end_to_end(gt_file: str, results_file: str) -> tuple[tuple[float, float], dict[str, np.ndarray]]:
    """A user's pycocotools evaluation of a results file: (wall, CPU) seconds and ``{iou_type: stats}``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    stats = {}
    with contextlib.redirect_stdout(io.StringIO()):
        with open(results_file) as f:
            results = json.load(f)
        gt = COCO(gt_file)
        for iou_type in ("bbox", "segm"):
            if iou_type == "segm":  # mask areas for the small/medium/large ranges, as COCOEvaluator does
                results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
            evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats[iou_type] = evaluator.stats
    return (time.perf_counter() - start, time.process_time() - start_cpu), stats


def end_to_end(num_images: int, threads: int) -> int:
    """COCOEvaluator.process() + evaluate() against pycocotools on its results file (see the module docstring)."""
    # Build (or find in the cache) the op in another process, as an earlier run would have; its load is timed.
    build = "from libdet.evaluation.fast_eval_api import native_coco_eval_available as a; raise SystemExit(not a())"
    if subprocess.run([sys.executable, "-c", build]).returncode != 0:
        print("the compiled coco_eval op is unavailable; nothing to compare")
        return 1
    torch.set_num_threads(threads)
    start = time.perf_counter()
    dataset, results = make_data(num_images, objects=7, detections=50)
    per_image = _model_outputs(results, num_images)
    workdir = tempfile.mkdtemp(prefix="libdet_coco_e2e_")
    gt_file = os.path.join(workdir, "gt.json")
    with open(gt_file, "w") as f:
        json.dump(dataset, f)
    print(
        f"data: {num_images} images ({HEIGHT}x{WIDTH}), {NUM_CATEGORIES} categories, "
        f"{len(dataset['annotations'])} ground-truth objects, {len(results)} detections with full-image masks "
        f"(generated in {time.perf_counter() - start:.1f}s)"
    )
    print(_environment())
    if os.path.exists("/proc/loadavg"):
        with open("/proc/loadavg") as f:
            print(
                f"load average at start: {f.read().split()[0]} on {os.cpu_count()} CPUs (CPU times are the robust ratio)"
            )

    tic = time.perf_counter()
    from libdet.data.catalog import MetadataCatalog
    from libdet.evaluation import COCOEvaluator

    import_s = time.perf_counter() - tic
    name = "_bench_coco_e2e"
    MetadataCatalog.get(name).set(
        json_file=gt_file,
        thing_classes=[c["name"] for c in dataset["categories"]],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(dataset["categories"])},
    )
    evaluator = COCOEvaluator(name, distributed=False, output_dir=os.path.join(workdir, "out"))
    evaluator.reset()
    process_s = process_cpu = 0.0
    for image_id, image_results in per_image:
        outputs = [{"instances": _instances(image_results)}]
        tic, tic_cpu = time.perf_counter(), time.process_time()
        evaluator.process([{"image_id": image_id}], outputs)
        process_s += time.perf_counter() - tic
        process_cpu += time.process_time() - tic_cpu
    tic, tic_cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        ours = evaluator.evaluate()
    evaluate_s, evaluate_cpu = time.perf_counter() - tic, time.process_time() - tic_cpu
    results_file = os.path.join(workdir, "out", "coco_instances_results.json")
    (ref_s, ref_cpu), ref_stats = _pycocotools_end_to_end(gt_file, results_file)

    metrics = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    same = all(ours[t][m] == ref_stats[t][i] * 100 for t in ("bbox", "segm") for i, m in enumerate(metrics))
    print(f"libdet import of libdet.evaluation: {import_s:.2f}s (not in the ratio)")
    print(
        f"libdet COCOEvaluator.process(): {process_s:.2f}s wall, {process_cpu:.2f}s CPU for {num_images} images "
        f"({process_cpu / num_images * 1e3:.2f} ms CPU/image: top-k, json conversion, RLE encoding)"
    )
    for label, ref, ours_evaluate, ours_all in (
        ("wall", ref_s, evaluate_s, process_s + evaluate_s),
        ("CPU ", ref_cpu, evaluate_cpu, process_cpu + evaluate_cpu),
    ):
        print(
            f"end to end, bbox+segm, {label} time: pycocotools {ref:.2f}s   libdet evaluate() {ours_evaluate:.2f}s   "
            f"ratio {ref / ours_evaluate:.1f}x   (process()+evaluate(): {ours_all:.2f}s, ratio {ref / ours_all:.1f}x)"
        )
    for t in ("bbox", "segm"):
        print(f"  {t:5s} AP {ours[t]['AP']:.4f} (pycocotools {ref_stats[t][0] * 100:.4f})")
    print(f"identical AP/AP50/AP75/APs/APm/APl (bit for bit): {same}")
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 images instead of 5000 (1500 with --end-to-end)")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for libdet (default 2)")
    parser.add_argument("--types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    parser.add_argument("--end-to-end", action="store_true", help="COCOEvaluator.process()+evaluate() vs pycocotools")
    args = parser.parse_args()
    if args.end_to_end:
        return end_to_end(args.images or (300 if args.quick else 1500), args.threads)
    from libdet.evaluation.fast_eval_api import COCOeval_opt, native_coco_eval_available

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
    print(_environment())
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
