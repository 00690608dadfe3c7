"""COCOeval_opt (libdet/evaluation/fast_eval_api.py + csrc/coco_eval) against pycocotools' COCOeval.

Parity is exact: every comparison uses np.array_equal (no tolerance), for bbox, segm and keypoints.
The data sets are generated with a seeded RNG: a few hundred small images, several categories (one with
ground truth only, one with detections only), crowd regions (boxes, uncompressed and compressed RLEs),
objects in all three area ranges, images without ground truth or without detections, tied scores,
polygons with repeated vertices or outside the image.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from libdet.evaluation import fast_eval_api
from libdet.evaluation.fast_eval_api import COCOeval_opt, native_coco_eval_available
from libdet.utils import compiled_ops

NATIVE = native_coco_eval_available()
needs_native = pytest.mark.skipif(not NATIVE, reason="the compiled coco_eval op is unavailable")

CATEGORIES = [1, 3, 4, 7, 9, 12]  # 9: ground truth only; 12: detections only
GT_CATEGORIES = [1, 3, 4, 7, 9]
DT_CATEGORIES = [1, 3, 4, 7, 12]


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    k = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.5, 1.0, k)
    xs = x + w / 2 + np.cos(angles) * radius * w / 2
    ys = y + h / 2 + np.sin(angles) * radius * h / 2
    points = np.stack([xs, ys], axis=1).round(2)
    if rng.random() < 0.2:  # a repeated vertex: pycocotools' zero-length edge
        points = np.insert(points, 1, points[1], axis=0)
    if rng.random() < 0.2:  # explicitly closed
        points = np.concatenate([points, points[:1]])
    return points.reshape(-1).tolist()


def _rle_string(polygons: list[list[float]], h: int, w: int) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    flat = mask.reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def make_dataset(seed: int, num_images: int = 300, segm: bool = True) -> tuple[dict, list[dict]]:
    """(ground-truth dataset dict, detection results) for bbox/segm evaluation."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        h, w = int(rng.integers(96, 200)), int(rng.integers(96, 200))
        images.append({"id": image_id * 3, "height": h, "width": w, "file_name": f"{image_id}.jpg"})
        num_gt = 0 if rng.random() < 0.12 else int(rng.integers(1, 7))
        gts = []
        for _ in range(num_gt):
            scale = rng.choice([8.0, 20.0, 45.0, 110.0])  # small, small/medium, medium, large
            bw, bh = [float(np.clip(scale * rng.uniform(0.6, 1.4), 2, 180)) for _ in range(2)]
            x, y = float(rng.uniform(-5, w - bw / 2)), float(rng.uniform(-5, h - bh / 2))
            cat = int(rng.choice(GT_CATEGORIES))
            crowd = int(rng.random() < 0.1)
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id * 3,
                "category_id": cat,
                "iscrowd": crowd,
                "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                "area": round(bw * bh * 0.8, 2),
            }
            if segm:
                polygons = [_polygon(rng, x, y, bw, bh) for _ in range(1 if rng.random() < 0.8 else 2)]
                if crowd:
                    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w)))
                    ann["segmentation"] = _uncompressed(mask.astype(bool))
                elif rng.random() < 0.15:
                    ann["segmentation"] = _rle_string(polygons, h, w)
                else:
                    ann["segmentation"] = polygons
            anns.append(ann)
            gts.append(ann)
        if rng.random() < 0.1:
            continue  # no detections on this image
        num_dt = int(rng.integers(0, 12))
        for _ in range(num_dt):
            if gts and rng.random() < 0.7:
                g = gts[int(rng.integers(len(gts)))]
                x, y, bw, bh = np.asarray(g["bbox"]) + rng.normal(0, 0.15, 4) * np.r_[g["bbox"][2:], g["bbox"][2:]]
                bw, bh = max(bw, 1.0), max(bh, 1.0)
                keep = g["category_id"] != 9 and rng.random() < 0.85
                cat = g["category_id"] if keep else int(rng.choice(DT_CATEGORIES))
            else:
                bw, bh = float(rng.uniform(4, 120)), float(rng.uniform(4, 120))
                x, y = float(rng.uniform(0, w - 4)), float(rng.uniform(0, h - 4))
                cat = int(rng.choice(DT_CATEGORIES))
            result = {
                "image_id": image_id * 3,
                "category_id": cat,
                "score": float(rng.integers(1, 40)) / 40,
                "bbox": [float(x), float(y), float(bw), float(bh)],
            }
            if segm:
                result["segmentation"] = _rle_string([_polygon(rng, x, y, bw, bh)], h, w)
            results.append(result)
    categories = [{"id": c, "name": f"c{c}"} for c in CATEGORIES]
    return {"images": images, "annotations": anns, "categories": categories}, results


def make_keypoint_dataset(seed: int, num_images: int = 200, num_kpts: int = 6) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": 200, "width": 200})
        gts = []
        for _ in range(0 if rng.random() < 0.1 else int(rng.integers(1, 5))):
            scale = rng.choice([20.0, 50.0, 120.0])
            bw, bh = scale * rng.uniform(0.7, 1.3, 2)
            x, y = rng.uniform(0, 200 - bw / 2), rng.uniform(0, 200 - bh / 2)
            kx, ky = x + rng.uniform(0, bw, num_kpts), y + rng.uniform(0, bh, num_kpts)
            v = rng.choice([0, 1, 2], num_kpts, p=[0.3, 0.2, 0.5]) if rng.random() > 0.15 else np.zeros(num_kpts, int)
            kps = np.stack([np.round(kx), np.round(ky), v], axis=1).astype(int)
            kps[v == 0, :2] = 0
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": int(rng.choice([1, 2])),
                "iscrowd": int(rng.random() < 0.05),
                "bbox": [float(x), float(y), float(bw), float(bh)],
                "area": float(bw * bh * 0.7),
                "keypoints": kps.reshape(-1).tolist(),
                "num_keypoints": int((v > 0).sum()),
            }
            anns.append(ann)
            gts.append((ann, kx, ky))
        for _ in range(int(rng.integers(0, 8))):
            if gts and rng.random() < 0.75:
                ann, kx, ky = gts[int(rng.integers(len(gts)))]
                noise = rng.normal(0, rng.choice([1.0, 4.0, 10.0]), (2, num_kpts))
                dx, dy = kx + noise[0], ky + noise[1]
                cat = ann["category_id"]
            else:
                dx, dy = rng.uniform(0, 200, num_kpts), rng.uniform(0, 200, num_kpts)
                cat = int(rng.choice([1, 2]))
            kps = np.stack([dx, dy, np.ones(num_kpts)], axis=1).reshape(-1)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "keypoints": kps.tolist(),
                    "score": float(rng.integers(1, 30)) / 30,
                }
            )
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "robot"}]
    return {"images": images, "annotations": anns, "categories": categories}, results


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _run(cls, dataset, results, iou_type, configure=None, between=None):
    """Evaluates with ``cls`` on fresh copies; returns the evaluator after summarize()."""
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = cls(gt, dt, iou_type)
        if configure is not None:
            configure(evaluator.params)
        evaluator.evaluate()
        if between is not None:
            between(evaluator.params)
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def assert_same(dataset, results, iou_type, configure=None, between=None):
    ours = _run(COCOeval_opt, dataset, results, iou_type, configure, between)
    ref = _run(COCOeval, dataset, results, iou_type, configure, between)
    for key in ("precision", "recall", "scores"):
        assert ours.eval[key].shape == ref.eval[key].shape, key
        assert ours.eval[key].dtype == ref.eval[key].dtype, key
        assert np.array_equal(ours.eval[key], ref.eval[key]), (key, np.argwhere(ours.eval[key] != ref.eval[key])[:5])
    assert ours.eval["counts"] == ref.eval["counts"]
    assert np.array_equal(ours.stats, ref.stats)
    for name in ("imgIds", "catIds", "maxDets", "areaRng", "useCats", "iouType"):
        assert list(np.asarray(getattr(ours.params, name)).reshape(-1)) == list(
            np.asarray(getattr(ref.params, name)).reshape(-1)
        ), name
    # The data must exercise the metric: something matched, something not.
    precision = ref.eval["precision"]
    assert (precision > 0).any() and (precision[precision > -1] < 1).any()
    return ours, ref


@pytest.fixture(scope="module")
def det_data():
    return make_dataset(seed=0)


@pytest.fixture(scope="module")
def kpt_data():
    return make_keypoint_dataset(seed=1)


@needs_native
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_default_params(det_data, iou_type):
    ours, ref = assert_same(*det_data, iou_type)
    # category 12 has detections but no ground truth: -1 everywhere; 9 has ground truth only: recall 0
    k12, k9 = list(ref.params.catIds).index(12), list(ref.params.catIds).index(9)
    assert (ours.eval["precision"][:, :, k12] == -1).all()
    assert (ours.eval["recall"][:, k9, 0] == 0).all()
    assert len(ours.evalImgs) == 0  # not materialised by the native path


@needs_native
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_max_dets_area_ranges_and_subsets(det_data, iou_type):
    dataset, results = det_data
    image_ids = [im["id"] for im in dataset["images"]]

    def configure(p):
        p.maxDets = [20, 1, 5]  # unsorted on purpose: evaluate() sorts them
        p.areaRng = [[0, 1e10], [0, 20**2], [20**2, 70**2], [70**2, 1e10]]
        p.imgIds = image_ids[::2] + image_ids[:10]  # duplicates too
        p.catIds = [7, 1, 4, 12]

    assert_same(dataset, results, iou_type, configure)


@needs_native
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_use_cats_0(det_data, iou_type):
    def configure(p):
        p.useCats = 0
        p.catIds = [1, 3, 4, 7, 9, 12]

    assert_same(*det_data, iou_type, configure)


@needs_native
def test_accumulate_with_other_params(det_data):
    """accumulate() after changing maxDets/imgIds follows pycocotools' index bookkeeping."""
    dataset, results = det_data

    def between(p):
        p.maxDets = [1, 10, 50]  # 50 was not evaluated: its column stays -1
        p.imgIds = p.imgIds[: len(p.imgIds) // 2]

    assert_same(dataset, results, "bbox", between=between)


@needs_native
def test_keypoints(kpt_data):
    sigmas = np.array([0.026, 0.079, 0.025, 0.107, 0.062, 0.089])
    assert_same(*kpt_data, "keypoints", configure=lambda p: setattr(p, "kpt_oks_sigmas", sigmas))


@needs_native
def test_keypoints_use_cats_0_and_max_dets(kpt_data):
    def configure(p):
        p.kpt_oks_sigmas = np.linspace(0.03, 0.1, 6)
        p.useCats = 0

    ours = _run(COCOeval_opt, *kpt_data, "keypoints", configure)
    ref = _run(COCOeval, *kpt_data, "keypoints", configure)
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ours.eval[key], ref.eval[key]), key

    def configure_max(p):
        p.kpt_oks_sigmas = np.linspace(0.03, 0.1, 6)
        p.maxDets = [3]

    assert_same(*kpt_data, "keypoints", configure_max)


@needs_native
def test_gt_id_zero_and_thread_count(det_data):
    """A gt of id 0 counts as unmatched in pycocotools (ids live in float arrays); threads change nothing."""
    dataset, results = copy.deepcopy(det_data)
    dataset["annotations"][0]["id"] = 0
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _run(COCOeval_opt, dataset, results, "bbox")
    finally:
        torch.set_num_threads(previous)
    ours, _ = assert_same(dataset, results, "bbox")
    assert np.array_equal(single.eval["precision"], ours.eval["precision"])


@needs_native
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_more_threads_same_results(det_data, iou_type):
    """The kernels hand groups / categories to the threads dynamically: any thread count, the same arrays."""
    previous = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(_run(COCOeval_opt, *det_data, iou_type))
    finally:
        torch.set_num_threads(previous)
    for run in runs[1:]:
        for key in ("precision", "recall", "scores"):
            assert np.array_equal(run.eval[key], runs[0].eval[key]), key


@needs_native
@pytest.mark.parametrize("order", ["descending", "shuffled"])
def test_recall_thresholds_in_any_order(det_data, order):
    """accumulate() walks ascending recall thresholds incrementally; other orders search from the start, as
    pycocotools' searchsorted does (and stops at the first threshold out of reach)."""

    def configure(p):
        thresholds = np.linspace(0.0, 0.15, 16)  # the segm recalls reach 0.18: not all stop at once
        p.recThrs = thresholds[::-1] if order == "descending" else np.random.default_rng(3).permutation(thresholds)

    assert_same(*det_data, "segm", configure)


@needs_native
@pytest.mark.parametrize("threads", [1, 3])  # 3: the error leaves the kernel's parallel region
def test_malformed_dt_rle_where_nothing_is_matched(threads):
    """A detection whose (category, image) has no ground truth is only measured, not matched: still checked."""
    dataset, results = _small_det_data()
    bad = next(r for r in results if r["category_id"] == 12)  # category 12 has no ground truth
    bad["segmentation"] = dict(bad["segmentation"], counts=bad["segmentation"]["counts"][:-3])
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    evaluator = COCOeval_opt(gt, dt, "segm")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(
            ValueError, match=f"annotation id {results.index(bad) + 1} \\(image id {bad['image_id']}\\)"
        ):
            evaluator.evaluate()
    finally:
        torch.set_num_threads(previous)


@needs_native
def test_decode_masks_matches_pycocotools():
    rng = np.random.default_rng(3)
    h, w = 37, 53
    anns = []
    for i in range(60):
        x, y, bw, bh = rng.uniform(-10, 40), rng.uniform(-10, 30), rng.uniform(1, 40), rng.uniform(1, 30)
        polygons = [_polygon(rng, x, y, bw, bh) for _ in range(int(rng.integers(1, 4)))]
        if i % 7 == 0:
            polygons[0] = [x, y, x, y, x + 0.3, y]  # degenerate: collinear / repeated points
        anns.append({"id": i + 1, "image_id": 1, "segmentation": polygons})
    for i in range(10):
        mask = rng.random((h, w)) < 0.3
        anns.append({"id": 100 + i, "image_id": 1, "segmentation": _uncompressed(mask)})
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        anns.append({"id": 200 + i, "image_id": 1, "segmentation": rle})  # bytes counts
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "height": h, "width": w}], "annotations": [], "categories": []}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    sources = fast_eval_api._mask_sources(anns, coco, "test")
    counts, offsets = torch.ops.libdet.coco_eval_decode_masks(sources)
    for row, ann in enumerate(anns):
        expected = mask_utils.decode(coco.annToRLE(copy.deepcopy(ann))).reshape(-1, order="F")
        runs = counts[offsets[row] : offsets[row + 1]].numpy()
        ours = np.repeat(np.arange(len(runs)) % 2, runs)
        assert runs.sum() == h * w and (runs[1:] > 0).all()
        assert np.array_equal(ours, expected), ann["id"]


def _small_det_data():
    dataset, results = make_dataset(seed=5, num_images=6)
    return dataset, results


@needs_native
@pytest.mark.parametrize(
    "corrupt, match",
    [
        (
            lambda s: s.__setitem__("counts", s["counts"] + [1]),
            "annotation id {id} \\(image id {image}\\).*expected height \\* width",
        ),
        (lambda s: s.__setitem__("size", [s["size"][0] + 1, s["size"][1]]), "annotation id {id}.*size"),
        (lambda s: s.__setitem__("counts", [-1] + s["counts"]), "annotation id {id} \\(image id {image}\\).*negative"),
    ],
)
def test_malformed_gt_rle(corrupt, match):
    dataset, results = _small_det_data()
    ann = next(a for a in dataset["annotations"] if a["iscrowd"])
    corrupt(ann["segmentation"])
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    evaluator = COCOeval_opt(gt, dt, "segm")
    evaluator.params.imgIds = [ann["image_id"]]
    with pytest.raises(ValueError, match=match.format(id=ann["id"], image=ann["image_id"])):
        evaluator.evaluate()


@needs_native
def test_malformed_dt_rle_string():
    dataset, results = _small_det_data()
    bad = results[0]
    bad["segmentation"] = dict(bad["segmentation"], counts=bad["segmentation"]["counts"][:-3])
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    evaluator = COCOeval_opt(gt, dt, "segm")
    with pytest.raises(ValueError, match=f"annotation id 1 \\(image id {bad['image_id']}\\)"):
        evaluator.evaluate()


@needs_native
@pytest.mark.parametrize("field", ["score", "bbox"])
def test_non_finite_detection(field):
    dataset, results = _small_det_data()
    bad = results[3]
    if field == "score":
        bad["score"] = float("nan")
    else:
        bad["bbox"][2] = float("inf")
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    evaluator = COCOeval_opt(gt, dt, "bbox")
    match = f"image id {bad['image_id']}, category id {bad['category_id']}.*non-finite {field}"
    with pytest.raises(ValueError, match=match):
        evaluator.evaluate()


@needs_native
def test_wrong_keypoint_count(kpt_data):
    dataset, results = copy.deepcopy(kpt_data)
    results[0]["keypoints"] = results[0]["keypoints"][:-3]
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    evaluator = COCOeval_opt(gt, dt, "keypoints")
    evaluator.params.kpt_oks_sigmas = np.full(6, 0.05)
    with pytest.raises(ValueError, match="detection annotation id 1 .*'keypoints'"):
        evaluator.evaluate()


def test_accumulate_before_evaluate(det_data):
    gt = _coco(det_data[0])
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(det_data[1]))
    with pytest.raises(RuntimeError, match="run evaluate"):
        COCOeval_opt(gt, dt, "bbox").accumulate()


def test_fallback_to_pycocotools_warns_once(monkeypatch, caplog):
    dataset, results = make_dataset(seed=7, num_images=30, segm=False)
    monkeypatch.setattr(fast_eval_api, "native_coco_eval_available", lambda: False)
    monkeypatch.setattr(fast_eval_api, "_fallback_warned", False)
    with caplog.at_level(logging.WARNING, logger=fast_eval_api.__name__):
        first = _run(COCOeval_opt, dataset, results, "bbox")
        _run(COCOeval_opt, dataset, results, "bbox")
    ref = _run(COCOeval, dataset, results, "bbox")
    assert np.array_equal(first.eval["precision"], ref.eval["precision"])
    assert np.array_equal(first.stats, ref.stats)
    assert len(first.evalImgs) > 0  # pycocotools' own evaluate ran
    warnings = [r for r in caplog.records if "coco_eval op is unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_ops_status_names_cpu_only_op():
    assert fast_eval_api.COCO_EVAL_OP in compiled_ops.registered_ops()
    assert not fast_eval_api.COCO_EVAL_OP.cuda
    if NATIVE:
        assert compiled_ops.ops_status()["coco_eval"] == "compiled (cpu-only op)"
        assert not fast_eval_api.COCO_EVAL_OP.use_kernel("cuda")
