"""Cityscapes evaluators on a one-image Cityscapes-layout set (needs the optional cityscapesscripts)."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from libdet.evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from libdet.structures import Instances

H, W = 64, 128
ROAD, PERSON, CAR = 7, 24, 26  # Cityscapes label ids (train ids 0, 11, 13)


def _gt():
    label_ids = np.full((H, W), ROAD, np.uint16)
    instance_ids = label_ids.copy()
    label_ids[10:30, 10:30] = PERSON
    instance_ids[10:30, 10:30] = PERSON * 1000
    label_ids[30:50, 60:90] = CAR
    instance_ids[30:50, 60:90] = CAR * 1000 + 1
    return label_ids, instance_ids


@pytest.fixture
def dataset(tmp_path, register_dataset):
    pytest.importorskip("cityscapesscripts", reason="needs the optional cityscapesscripts (libdet[cityscapes])")
    gt_dir = tmp_path / "gtFine" / "val"
    (gt_dir / "frankfurt").mkdir(parents=True)
    label_ids, instance_ids = _gt()
    stem = "frankfurt_000000_000001"
    Image.fromarray(label_ids.astype(np.uint8)).save(gt_dir / "frankfurt" / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(instance_ids.astype(np.uint16)).save(gt_dir / "frankfurt" / f"{stem}_gtFine_instanceIds.png")
    name = register_dataset(
        "cityscapes",
        gt_dir=str(gt_dir),
        thing_classes=["person", "car"],
        stuff_classes=["road"] + ["x"] * 10 + ["person", "rider", "car"],
    )
    return name, {"file_name": f"/data/leftImg8bit/val/frankfurt/{stem}_leftImg8bit.png", "image_id": stem}


def test_instance_evaluator_perfect_predictions(dataset):
    name, input = dataset
    label_ids, instance_ids = _gt()
    masks = torch.stack(
        [torch.as_tensor(instance_ids == PERSON * 1000), torch.as_tensor(instance_ids == CAR * 1000 + 1)]
    )
    inst = Instances((H, W), pred_masks=masks, pred_classes=torch.tensor([0, 1]), scores=torch.tensor([0.9, 0.8]))
    evaluator = CityscapesInstanceEvaluator(name)
    evaluator.reset()
    evaluator.process([input], [{"instances": inst}])
    res = evaluator.evaluate()["segm"]
    assert res["AP"] == pytest.approx(100.0) and res["AP50"] == pytest.approx(100.0)
    # the person predicted as a (lower-scoring) car: person AP 0, car AP 100
    inst.pred_classes = torch.tensor([1, 1])
    inst.scores = torch.tensor([0.5, 0.8])
    evaluator.reset()
    evaluator.process([input], [{"instances": inst}])
    assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(50.0)


def test_sem_seg_evaluator(dataset):
    name, input = dataset
    label_ids, _ = _gt()
    train = np.zeros((H, W), np.int64)
    train[label_ids == PERSON] = 11
    train[label_ids == CAR] = 13
    scores = torch.nn.functional.one_hot(torch.as_tensor(train), 19).permute(2, 0, 1).float()
    evaluator = CityscapesSemSegEvaluator(name)
    evaluator.reset()
    evaluator.process([input], [{"sem_seg": scores}])
    res = evaluator.evaluate()["sem_seg"]
    assert res["IoU"] == pytest.approx(100.0) and res["IoU_sup"] == pytest.approx(100.0)
    evaluator.reset()
    evaluator.process(
        [input],
        [{"sem_seg": torch.nn.functional.one_hot(torch.zeros(H, W, dtype=torch.int64), 19).permute(2, 0, 1).float()}],
    )
    res = evaluator.evaluate()["sem_seg"]
    road_iou = (H * W - 400 - 600) / (H * W)
    assert res["IoU"] == pytest.approx(100 * road_iou / 3, abs=1e-3)  # road, person (0), car (0)


def test_missing_cityscapesscripts_message(register_dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    evaluator = CityscapesSemSegEvaluator(register_dataset("cs_missing", gt_dir="/nonexistent"))
    with pytest.raises(ImportError, match=r"libdet\[cityscapes\]"):
        evaluator.reset()
