"""RotatedCOCOEvaluator: parity with COCO bbox AP on axis-aligned boxes, and real rotated cases."""

import json

import numpy as np
import pytest
import torch

from libdet.evaluation import RotatedCOCOEvaluator
from libdet.structures import Instances, RotatedBoxes

from .test_coco_evaluation import CLASS_NAMES, DATASET_IDS, make_coco, pycocotools_stats, reference_results


def _to_rotated(inst):
    xyxy = inst.pred_boxes.tensor
    xywha = torch.stack(
        [
            (xyxy[:, 0] + xyxy[:, 2]) / 2,
            (xyxy[:, 1] + xyxy[:, 3]) / 2,
            xyxy[:, 2] - xyxy[:, 0],
            xyxy[:, 3] - xyxy[:, 1],
            torch.zeros(len(xyxy)),
        ],
        dim=1,
    )
    return Instances(
        inst.image_size,
        pred_boxes=RotatedBoxes(xywha),
        scores=inst.scores,
        pred_classes=inst.pred_classes,
        pred_masks=inst.pred_masks,
    )


def _run(evaluator, items):
    evaluator.reset()
    for img_id, inst in items:
        evaluator.process([{"image_id": img_id}], [{"instances": inst}])
    return evaluator.evaluate()


def _register(tmp_path, register_dataset, gt):
    gt_file = str(tmp_path / "rotated_gt.json")
    with open(gt_file, "w") as f:
        json.dump(gt, f)
    name = register_dataset(
        "rotated",
        json_file=gt_file,
        thing_classes=CLASS_NAMES,
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
    )
    return name, gt_file


def test_axis_aligned_parity_with_coco_bbox(tmp_path, register_dataset):
    gt, predictions = make_coco(60, seed=30, crowd=False)
    name, gt_file = _register(tmp_path, register_dataset, gt)
    res = _run(RotatedCOCOEvaluator(name, distributed=False), [(i, _to_rotated(p)) for i, p in predictions])
    assert list(res) == ["bbox"]
    stats = pycocotools_stats(gt_file, reference_results(predictions), "bbox")
    for idx, metric in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        want = stats[idx] * 100 if stats[idx] >= 0 else float("nan")
        np.testing.assert_allclose(res["bbox"][metric], want, atol=1e-6, err_msg=metric)


def test_rotated_boxes(tmp_path, register_dataset):
    gt = {
        "images": [{"id": 1, "height": 64, "width": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [32, 32, 20, 10, 30], "area": 200, "iscrowd": 0}
        ],
        "categories": [{"id": i, "name": n} for i, n in zip(DATASET_IDS, CLASS_NAMES)],
    }
    name, _ = _register(tmp_path, register_dataset, gt)

    def pred(angle):
        return Instances(
            (64, 64),
            pred_boxes=RotatedBoxes(torch.tensor([[32.0, 32.0, 20.0, 10.0, angle]])),
            scores=torch.tensor([0.9]),
            pred_classes=torch.tensor([0]),
        )

    same = _run(RotatedCOCOEvaluator(name, distributed=False), [(1, pred(30.0))])["bbox"]
    assert same["AP"] == pytest.approx(100.0) and same["AP-cat"] == pytest.approx(100.0)
    # rotated by 90 degrees: IoU = 100 / (200 + 200 - 100) = 1/3 -> no match at any threshold
    crossed = _run(RotatedCOCOEvaluator(name, distributed=False), [(1, pred(120.0))])["bbox"]
    assert crossed["AP50"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="only evaluates"):
        RotatedCOCOEvaluator(name, tasks=("segm",))
