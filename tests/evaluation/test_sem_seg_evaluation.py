"""SemSegEvaluator on a hand-computed confusion matrix."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from libdet.evaluation import SemSegEvaluator

CLASSES = ["a", "b", "c", "d"]
GT = np.array([[0, 0, 1, 1], [255, 1, 2, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [3, 1, 2, 3]])


def _scores(pred, num_classes=4):
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()


@pytest.fixture
def dataset(tmp_path, register_dataset):
    Image.fromarray(GT).save(tmp_path / "gt0.png")
    Image.fromarray(np.full((2, 4), 255, np.uint8)).save(tmp_path / "gt1.png")  # all ignored
    name = register_dataset("semseg", stuff_classes=CLASSES, ignore_label=255)
    inputs = [
        {"file_name": "img0.jpg", "sem_seg_file_name": str(tmp_path / "gt0.png")},
        {"file_name": "img1.jpg", "sem_seg_file_name": str(tmp_path / "gt1.png")},
    ]
    return name, inputs


def test_hand_computed_metrics(dataset, tmp_path):
    name, inputs = dataset
    evaluator = SemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    evaluator.process(inputs[:1], [{"sem_seg": _scores(PRED)}])
    evaluator.process(inputs[1:], [{"sem_seg": _scores(np.zeros((2, 4), np.int64))}])
    res = evaluator.evaluate()["sem_seg"]
    # pixel pairs (pred, gt) without the ignored pixel: (0,0) (1,0) (1,1)x3 (2,2) (3,0)
    assert res["IoU-a"] == pytest.approx(100 / 3)
    assert res["IoU-b"] == pytest.approx(75.0)
    assert res["IoU-c"] == pytest.approx(100.0)
    assert np.isnan(res["IoU-d"]) and np.isnan(res["ACC-d"])  # absent from the gt: excluded
    assert res["mIoU"] == pytest.approx(100 * 25 / 36)
    assert res["fwIoU"] == pytest.approx(100 * 17 / 28)
    assert res["mACC"] == pytest.approx(100 * 7 / 9)
    assert res["pACC"] == pytest.approx(100 * 5 / 7)
    assert res["ACC-a"] == pytest.approx(100 / 3) and res["ACC-b"] == pytest.approx(100.0)
    written = json.load(open(tmp_path / "out" / "sem_seg_predictions.json"))
    assert {(r["file_name"], r["category_id"]) for r in written} == {
        ("img0.jpg", 0),
        ("img0.jpg", 1),
        ("img0.jpg", 2),
        ("img0.jpg", 3),
        ("img1.jpg", 0),
    }


def test_label_predictions_and_errors(dataset):
    name, inputs = dataset
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process(inputs[:1], [{"sem_seg": torch.as_tensor(PRED)}])  # [H, W] labels accepted
    assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100 * 25 / 36)
    wrong_num_classes = SemSegEvaluator(name, num_classes=3)
    wrong_num_classes.reset()
    with pytest.raises(ValueError, match="num_classes=3"):
        wrong_num_classes.process(inputs[:1], [{"sem_seg": _scores(PRED)}])
    with pytest.raises(ValueError, match="gt0.png"):
        evaluator.process(inputs[:1], [{"sem_seg": _scores(PRED[:, :3])}])
    with pytest.raises(ValueError, match="outside"):
        SemSegEvaluator(name, distributed=False, ignore_label=7).process(inputs[:1], [{"sem_seg": _scores(PRED)}])


def test_no_labeled_pixels_gives_nan(dataset):
    name, inputs = dataset
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process(inputs[1:], [{"sem_seg": _scores(np.zeros((2, 4), np.int64))}])
    res = evaluator.evaluate()["sem_seg"]
    assert np.isnan(res["mIoU"]) and np.isnan(res["pACC"])
