"""COCOPanopticEvaluator / pq_compute_single_image on hand-built cases (void, crowd, FP, FN)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from libdet.evaluation import COCOPanopticEvaluator
from libdet.evaluation.panoptic_evaluation import id2rgb, pq_compute_single_image, rgb2id

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
]


def _image1():
    gt = np.zeros((10, 10), np.int64)
    gt[0:2] = 1  # person
    gt[2:4] = 2  # car
    gt[4:7] = 3  # sky
    gt[7:9] = 4  # crowd person
    # row 9: VOID
    gt_segments = [
        {"id": 1, "category_id": 1, "iscrowd": 0},
        {"id": 2, "category_id": 2, "iscrowd": 0},
        {"id": 3, "category_id": 3, "iscrowd": 0},
        {"id": 4, "category_id": 1, "iscrowd": 1},
    ]
    pred = np.zeros((10, 10), np.int64)
    pred[0:2] = 11
    pred[2, 0:5] = 11  # person: 25 px, IoU 20/25 with gt person -> TP
    pred[4:6] = 12
    pred[9] = 12  # sky: 30 px, 10 on VOID: IoU 20 / (30 + 30 - 20 - 10) -> TP
    pred[7:9] = 13  # person on the crowd region -> ignored, not FP
    pred[6] = 14  # car on sky -> FP car
    pred[2, 5:] = 15
    pred[3] = 15  # sky on the car -> FP sky (and the car gt is a FN)
    segments = [
        {"id": 11, "category_id": 0, "isthing": True},
        {"id": 12, "category_id": 0, "isthing": False},
        {"id": 13, "category_id": 0, "isthing": True},
        {"id": 14, "category_id": 1, "isthing": True},
        {"id": 15, "category_id": 0, "isthing": False},
    ]
    return gt, gt_segments, pred, segments


def _image2():
    gt = np.zeros((10, 10), np.int64)
    gt[0:5] = 7  # person; the rest is VOID
    pred = np.zeros((10, 10), np.int64)
    pred[0:5] = 1  # exact -> TP IoU 1
    pred[5:] = 2  # car entirely on VOID -> ignored
    return (
        gt,
        [{"id": 7, "category_id": 1, "iscrowd": 0}],
        pred,
        [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 1, "isthing": True}],
    )


@pytest.fixture
def dataset(tmp_path, register_dataset):
    root = tmp_path / "panoptic"
    root.mkdir()
    annotations = []
    preds = []
    for image_id, (gt, gt_segments, pred, segments) in ((1, _image1()), (2, _image2())):
        Image.fromarray(id2rgb(gt)).save(root / f"{image_id}.png")
        annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": gt_segments})
        preds.append((image_id, pred, segments))
    json_file = tmp_path / "panoptic.json"
    json_file.write_text(
        json.dumps({"annotations": annotations, "categories": CATEGORIES, "images": [{"id": 1}, {"id": 2}]})
    )
    name = register_dataset(
        "panoptic",
        panoptic_json=str(json_file),
        panoptic_root=str(root),
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        stuff_dataset_id_to_contiguous_id={3: 0},
        label_divisor=1000,
    )
    return name, preds


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 256, 65536 + 3]])
    np.testing.assert_array_equal(rgb2id(id2rgb(ids)), ids)


def test_hand_computed_pq(dataset, tmp_path):
    name, preds = dataset
    evaluator = COCOPanopticEvaluator(name, output_dir=str(tmp_path / "out"), distributed=False)
    evaluator.reset()
    for image_id, pred, segments in preds:
        evaluator.process([{"image_id": image_id}], [{"panoptic_seg": (torch.as_tensor(pred), segments)}])
    res = evaluator.evaluate()["panoptic_seg"]
    person = (0.8 + 1.0) / 2  # PQ = SQ (RQ = 1)
    sky_pq, sky_sq, sky_rq = (2 / 3) / 1.5, 2 / 3, 1 / 1.5
    expected = {
        "PQ-person": person,
        "SQ-person": person,
        "RQ-person": 1.0,
        "PQ-car": 0.0,
        "SQ-car": 0.0,
        "RQ-car": 0.0,
        "PQ-sky": sky_pq,
        "SQ-sky": sky_sq,
        "RQ-sky": sky_rq,
        "PQ_th": person / 2,
        "SQ_th": person / 2,
        "RQ_th": 0.5,
        "PQ_st": sky_pq,
        "SQ_st": sky_sq,
        "RQ_st": sky_rq,
        "PQ": (person + sky_pq) / 3,
        "SQ": (person + sky_sq) / 3,
        "RQ": (1 + sky_rq) / 3,
    }
    for key, value in expected.items():
        assert res[key] == pytest.approx(100 * value), key
    written = json.load(open(tmp_path / "out" / "predictions.json"))
    assert [a["image_id"] for a in written["annotations"]] == [1, 2]
    assert written["annotations"][0]["segments_info"][1]["category_id"] == 3  # sky back to its dataset id
    png = rgb2id(np.asarray(Image.open(os.path.join(tmp_path, "out", "predictions", "1.png"))))
    np.testing.assert_array_equal(png, preds[0][1])


def test_single_image_counts():
    gt, gt_segments, pred, segments = _image1()
    dataset_segments = [
        dict(s, category_id={(0, True): 1, (1, True): 2, (0, False): 3}[(s["category_id"], s["isthing"])])
        for s in segments
    ]
    stat = pq_compute_single_image(gt, gt_segments, pred, dataset_segments, {c["id"]: c for c in CATEGORIES}, 1)
    assert stat.stats[1] == {"tp": 1, "fp": 0, "fn": 0, "iou": pytest.approx(0.8)}
    assert stat.stats[2] == {"tp": 0, "fp": 1, "fn": 1, "iou": 0.0}
    assert stat.stats[3] == {"tp": 1, "fp": 1, "fn": 0, "iou": pytest.approx(2 / 3)}


def test_iou_exactly_half_is_not_a_match():
    cats = {1: {"id": 1, "isthing": 1}, 2: {"id": 2, "isthing": 0}}
    gt = np.array([[1, 1, 2, 2]])
    gt_segments = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}]
    half = pq_compute_single_image(gt, gt_segments, np.full((1, 4), 5), [{"id": 5, "category_id": 1}], cats)
    assert half.stats[1] == {"tp": 0, "fp": 1, "fn": 1, "iou": 0.0}  # IoU 2/4 is not > 0.5
    more = pq_compute_single_image(gt, gt_segments, np.array([[5, 5, 5, 0]]), [{"id": 5, "category_id": 1}], cats)
    assert more.stats[1]["tp"] == 1 and more.stats[1]["iou"] == pytest.approx(2 / 3)
    assert more.stats[2] == {"tp": 0, "fp": 0, "fn": 1, "iou": 0.0}


def test_segments_info_none_uses_label_divisor(dataset):
    name, preds = dataset
    _, pred, segments = preds[1]
    labels = np.full(pred.shape, -1, np.int64)
    labels[pred == 1] = 0 * 1000 + 1  # person (contiguous 0), instance 1
    evaluator = COCOPanopticEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": 2}], [{"panoptic_seg": (torch.as_tensor(labels), None)}])
    res = evaluator.evaluate()["panoptic_seg"]
    assert res["PQ-person"] == pytest.approx(100.0)
    assert res["PQ_th"] == pytest.approx(100.0)  # car has no gt and no prediction: not counted


def test_errors(dataset):
    name, preds = dataset
    image_id, pred, segments = preds[1]
    evaluator = COCOPanopticEvaluator(name, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match="image_id 99"):
        evaluator.process([{"image_id": 99}], [{"panoptic_seg": (torch.as_tensor(pred), segments)}])
    with pytest.raises(ValueError, match="image_id 2: segment id 2 is in the prediction image"):
        evaluator.process([{"image_id": 2}], [{"panoptic_seg": (torch.as_tensor(pred), segments[:1])}])
    with pytest.raises(ValueError, match="image_id 2: predicted thing category 5"):
        bad = [segments[0], dict(segments[1], category_id=5)]
        evaluator.process([{"image_id": 2}], [{"panoptic_seg": (torch.as_tensor(pred), bad)}])
