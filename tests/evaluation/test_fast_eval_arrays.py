"""COCOeval_opt fed with detection arrays (``detections=``, no ``COCO`` of results) against pycocotools.

The reference is pycocotools' COCOeval on ``loadRes`` of the same results ("segm" results without their "bbox",
as COCOEvaluator evaluates them). Comparisons are exact (np.array_equal). The data set (from
``test_fast_eval_api``) has crowd regions, empty images, images without detections, a category with detections
only and one with ground truth only.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from libdet.evaluation.fast_eval_api import (
    COCOeval_opt,
    DetectionArrays,
    detection_arrays,
    detection_arrays_by_type,
)

from .test_fast_eval_api import _coco, make_dataset, needs_native


@pytest.fixture(scope="module")
def data():
    return make_dataset(seed=3, num_images=120)


def _for_task(results: list[dict], iou_type: str) -> list[dict]:
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")
    return results


def _finish(evaluator, configure=None):
    with contextlib.redirect_stdout(io.StringIO()):
        if configure is not None:
            configure(evaluator.params)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _reference(dataset, results, iou_type, configure=None):
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(_for_task(results, iou_type))
    return _finish(COCOeval(gt, dt, iou_type), configure)


def _assert_equal(ours, ref):
    for key in ("precision", "recall", "scores"):
        assert ours.eval[key].dtype == ref.eval[key].dtype
        assert np.array_equal(ours.eval[key], ref.eval[key]), key
    assert np.array_equal(ours.stats, ref.stats)
    precision = ref.eval["precision"]
    assert (precision > 0).any() and (precision[precision > -1] < 1).any()  # the data exercise the metric


def _subsets(image_ids):
    def configure(p):
        p.maxDets = [20, 1, 5]
        p.areaRng = [[0, 1e10], [0, 20**2], [20**2, 70**2], [70**2, 1e10]]
        p.imgIds = image_ids[::2] + image_ids[:10]  # detections of the other images are left out
        p.catIds = [7, 1, 4, 12]

    return configure


@needs_native
@pytest.mark.parametrize(
    "iou_type, mask_areas", [("bbox", True), ("segm", True), ("segm", False)]
)  # mask_areas=False: the kernel measures the masks
@pytest.mark.parametrize("subsets", [False, True])
def test_arrays_match_pycocotools(data, iou_type, mask_areas, subsets):
    dataset, results = data
    assert any(a.get("iscrowd") for a in dataset["annotations"])
    configure = _subsets([im["id"] for im in dataset["images"]]) if subsets else None
    arrays = detection_arrays(results, iou_type, mask_areas=mask_areas)
    assert isinstance(arrays, DetectionArrays) and len(arrays) == len(results)
    assert (arrays.areas is None) == (not mask_areas)
    ours = _finish(COCOeval_opt(_coco(dataset), None, iou_type, detections=arrays), configure)
    _assert_equal(ours, _reference(dataset, results, iou_type, configure))


@needs_native
def test_areas_are_load_res_areas(data):
    dataset, results = data
    gt = _coco(dataset)
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(_for_task(results, iou_type))
        expected = np.array([dt.anns[i + 1]["area"] for i in range(len(results))], dtype=np.float64)
        assert np.array_equal(detection_arrays(results, iou_type).areas, expected)


@needs_native
def test_gt_cache_reused_and_keyed_by_params(data):
    dataset, results = data
    gt = _coco(dataset)
    cache: dict = {}
    arrays = detection_arrays(results, "segm")
    first = _finish(COCOeval_opt(gt, None, "segm", detections=arrays, gt_cache=cache))
    assert len(cache) == 1
    (entry,) = cache.values()
    second = _finish(COCOeval_opt(gt, None, "segm", detections=arrays, gt_cache=cache))
    assert len(cache) == 1 and next(iter(cache.values()))[1] is entry[1]  # the flattened gt was reused
    assert np.array_equal(first.eval["precision"], second.eval["precision"])
    configure = _subsets([im["id"] for im in dataset["images"]])
    third = _finish(COCOeval_opt(gt, None, "segm", detections=arrays, gt_cache=cache), configure)
    assert len(cache) == 2
    _assert_equal(third, _reference(dataset, results, "segm", configure))
    bbox = _finish(COCOeval_opt(gt, None, "bbox", detections=detection_arrays(results, "bbox"), gt_cache=cache))
    assert len(cache) == 3
    _assert_equal(bbox, _reference(dataset, results, "bbox"))


@needs_native
def test_results_file_through_load_res(data, tmp_path):
    """A user's results json, loaded with ``loadRes(path)``, still goes through ``cocoDt``."""
    dataset, results = data
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_for_task(results, "segm")))
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(path))
    ours = _finish(COCOeval_opt(gt, dt, "segm"))
    _assert_equal(ours, _reference(dataset, results, "segm"))


def test_detection_arrays_by_type_reads_shared_columns_once(data):
    _, results = data
    both = detection_arrays_by_type(results, ("bbox", "segm", "keypoints"), mask_areas=False)
    assert both["keypoints"] is None
    bbox, segm = both["bbox"], both["segm"]
    assert bbox.image_ids is segm.image_ids and bbox.scores is segm.scores  # read once, shared
    for iou_type, arrays in both.items():
        alone = detection_arrays(results, iou_type, mask_areas=False)
        if arrays is None:
            assert alone is None
            continue
        for field in ("image_ids", "category_ids", "scores", "areas", "boxes", "rle_sizes"):
            a, b = getattr(arrays, field), getattr(alone, field)
            assert (a is None and b is None) or np.array_equal(a, b), (iou_type, field)
    assert segm.rle_counts == [r["segmentation"]["counts"] for r in results]
    without_boxes = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    partial = detection_arrays_by_type(without_boxes, ("bbox", "segm"))
    assert partial["bbox"] is None and partial["segm"] is not None  # one type's failure leaves the other


@needs_native
def test_measured_areas_only_for_segm(data):
    dataset, results = data
    arrays = detection_arrays(results, "bbox")
    no_areas = DetectionArrays(arrays.image_ids, arrays.category_ids, arrays.scores, None, boxes=arrays.boxes)
    with pytest.raises(ValueError, match="'bbox' needs areas"):
        _finish(COCOeval_opt(_coco(dataset), None, "bbox", detections=no_areas))


def test_detection_arrays_declines_other_kinds(data):
    _, results = data
    assert detection_arrays([], "bbox") is None
    assert detection_arrays(results, "keypoints") is None
    polygons = [{**r, "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]} for r in results[:3]]
    assert detection_arrays(polygons, "segm") is None
    assert detection_arrays([{**results[0], "bbox": []}], "bbox") is None
    assert detection_arrays([{k: v for k, v in results[0].items() if k != "score"}], "bbox") is None


@needs_native
def test_bad_detections_raise(data):
    dataset, results = data
    gt = _coco(dataset)
    bad = copy.deepcopy(results)
    bad[5]["score"] = float("nan")
    with pytest.raises(ValueError, match="non-finite score"):
        COCOeval_opt(gt, None, "bbox", detections=detection_arrays(bad, "bbox")).evaluate()
    bad = copy.deepcopy(results)
    bad[2]["bbox"][1] = float("inf")
    with pytest.raises(ValueError, match="non-finite bbox"):
        COCOeval_opt(gt, None, "bbox", detections=detection_arrays(bad, "bbox")).evaluate()
    bad = copy.deepcopy(results)
    bad[4]["segmentation"]["size"] = [7, 7]
    with pytest.raises(ValueError, match=r"RLE of size \[7, 7\]"):
        COCOeval_opt(gt, None, "segm", detections=detection_arrays(bad, "segm")).evaluate()
    bad = copy.deepcopy(results)
    bad[1]["image_id"] = 10**9
    with pytest.raises(ValueError, match="image id 1000000000, which is not in the ground truth"):
        COCOeval_opt(gt, None, "bbox", detections=detection_arrays(bad, "bbox")).evaluate()
    evaluator = COCOeval_opt(gt, None, "bbox", detections=detection_arrays(results, "bbox"))
    evaluator.params.useCats = 0
    with pytest.raises(ValueError, match="useCats"):
        evaluator.evaluate()
    with pytest.raises(ValueError, match="either cocoDt or detections"):
        COCOeval_opt(gt, gt, "bbox", detections=detection_arrays(results, "bbox"))


@needs_native
def test_coco_evaluator_uses_arrays_and_caches_gt(register_dataset, tmp_path, monkeypatch):
    """COCOEvaluator feeds bbox and segm results as arrays (no COCO of results), bit-identical to pycocotools on
    the results file it writes, and a second evaluate() reuses the flattened ground truth."""
    from libdet.evaluation import coco_evaluation
    from libdet.evaluation.coco_evaluation import COCOEvaluator

    from .test_coco_evaluation import CLASS_NAMES, DATASET_IDS, make_coco, run_evaluator

    gt, predictions = make_coco(120, 5, 0)
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    name = register_dataset(
        "arrays",
        json_file=str(gt_file),
        thing_classes=CLASS_NAMES,
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
    )

    def no_coco_of_results(*args, **kwargs):
        raise AssertionError("the native path must not build a COCO object of the results")

    monkeypatch.setattr(coco_evaluation, "_load_results", no_coco_of_results)
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "out"))
    first = run_evaluator(evaluator, predictions)
    assert gc.isenabled()  # the evaluation pauses the cyclic collector and restores it
    assert len(evaluator._flat_gt_cache) == 2  # bbox and segm
    cached = {k: v[1] for k, v in evaluator._flat_gt_cache.items()}
    second = evaluator.evaluate()
    assert {k: v[1] for k, v in evaluator._flat_gt_cache.items()} == cached  # the same objects, reused
    assert json.dumps(first) == json.dumps(second)

    written = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    gt_coco = _coco(gt)
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            ref = COCOeval(gt_coco, gt_coco.loadRes(_for_task(written, iou_type)), iou_type)
            ref.evaluate()
            ref.accumulate()
            ref.summarize()
        stats = [first[iou_type][m] for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        expected = [s * 100 if s >= 0 else float("nan") for s in ref.stats[:6]]
        assert np.array_equal(stats, expected, equal_nan=True), iou_type
