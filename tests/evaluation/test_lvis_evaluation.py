"""LVISEvaluator parity with ``lvis.LVISEval`` on a generated LVIS-format set (federated rules, r/c/f)."""

import copy
import json
import logging

import numpy as np
import pytest

from libdet.evaluation import LVISEvaluator
from libdet.evaluation.lvis_evaluation import _numpy_float_alias

from .test_coco_evaluation import CLASS_NAMES, DATASET_IDS, make_coco, reference_results, run_evaluator

lvis = pytest.importorskip("lvis", reason="LVIS parity needs the optional 'lvis' package (libdet[lvis])")
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


def make_lvis(num_images, seed):
    gt, predictions = make_coco(num_images, seed, crowd=False)
    rng = np.random.default_rng(seed + 100)
    present = {img["id"]: set() for img in gt["images"]}
    for ann in gt["annotations"]:
        present[ann["image_id"]].add(ann["category_id"])
    for img in gt["images"]:
        absent = [c for c in DATASET_IDS if c not in present[img["id"]]]
        img["neg_category_ids"] = [c for c in absent if rng.random() < 0.6]
        img["not_exhaustive_category_ids"] = [c for c in present[img["id"]] if rng.random() < 0.3]
    for cat, freq in zip(gt["categories"], "rcf"):
        cat["frequency"] = freq
        cat["image_count"] = 1
    return gt, predictions


@pytest.fixture
def lvis_dataset(tmp_path, register_dataset):
    gt, predictions = make_lvis(250, seed=20)
    gt_file = str(tmp_path / "lvis.json")
    with open(gt_file, "w") as f:
        json.dump(gt, f)
    name = register_dataset(
        "lvis",
        json_file=gt_file,
        thing_classes=CLASS_NAMES,
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
    )
    return name, gt_file, predictions


def _reference(gt_file, results, iou_type, max_dets=300):
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")
    logging.getLogger("lvis").setLevel(logging.WARNING)
    gt = lvis.LVIS(gt_file)
    ev = lvis.LVISEval(gt, lvis.LVISResults(gt, results, max_dets=max_dets), iou_type)
    if max_dets >= 0:
        ev.params.max_dets = max_dets
    with _numpy_float_alias():  # lvis 0.5.3 uses np.float, removed in NumPy 1.24
        ev.run()
    return ev.get_results()


def test_parity_with_lvis_eval(lvis_dataset):
    name, gt_file, predictions = lvis_dataset
    results = run_evaluator(LVISEvaluator(name, distributed=False), predictions)
    ref = reference_results(predictions)
    for task in ("bbox", "segm"):
        expected = _reference(gt_file, ref, task)
        for metric in METRICS:  # LVIS's -1 ("no gt in this range") is NaN in libdet
            want = expected[metric] * 100 if expected[metric] >= 0 else float("nan")
            np.testing.assert_allclose(results[task][metric], want, atol=1e-9, err_msg=metric)
    assert all(np.isfinite(results["bbox"][m]) and results["bbox"][m] > 0 for m in ("APr", "APc", "APf"))


def test_federated_rules_matter(lvis_dataset):
    """Detections of a category neither present nor negative in an image are not penalised."""
    name, gt_file, predictions = lvis_dataset
    gt = json.load(open(gt_file))
    ref = reference_results(predictions)
    base = _reference(gt_file, ref, "bbox")["AP"]
    # add a high-scoring false positive of a category absent and unverified in image 10
    img = next(
        i
        for i in gt["images"]
        if set(DATASET_IDS)
        - set(i["neg_category_ids"])
        - {a["category_id"] for a in gt["annotations"] if a["image_id"] == i["id"]}
    )
    unverified = sorted(
        set(DATASET_IDS)
        - set(img["neg_category_ids"])
        - {a["category_id"] for a in gt["annotations"] if a["image_id"] == img["id"]}
    )[0]
    extra = ref + [{"image_id": img["id"], "category_id": unverified, "bbox": [0, 0, 5, 5], "score": 1.0}]
    assert _reference(gt_file, extra, "bbox")["AP"] == pytest.approx(base)


def test_max_dets_and_errors(lvis_dataset):
    name, gt_file, predictions = lvis_dataset
    res = run_evaluator(LVISEvaluator(name, tasks=("bbox",), distributed=False, max_dets_per_image=2), predictions)
    expected = _reference(gt_file, reference_results(predictions, top_k=2), "bbox", max_dets=2)
    np.testing.assert_allclose(res["bbox"]["AP"], expected["AP"] * 100, atol=1e-9)
    empty = [(i, p[p.scores < -1]) for i, p in predictions[:3]]
    zeros = run_evaluator(LVISEvaluator(name, tasks=("bbox",), distributed=False), empty)
    assert zeros["bbox"] == {m: 0.0 for m in METRICS}
    with pytest.raises(ValueError, match="image_id 424242"):
        run_evaluator(LVISEvaluator(name, distributed=False), [(424242, predictions[0][1])])


def test_missing_lvis_package_message(lvis_dataset, monkeypatch):
    import sys

    name, _, predictions = lvis_dataset
    monkeypatch.setitem(sys.modules, "lvis", None)
    with pytest.raises(ImportError, match=r"libdet\[lvis\]"):
        run_evaluator(LVISEvaluator(name, distributed=False), predictions[:2])
