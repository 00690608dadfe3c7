"""PascalVOCDetectionEvaluator / voc_eval on a hand-computed example (VOC07 11-point and area AP)."""

import numpy as np
import pytest
import torch

from libdet.evaluation import PascalVOCDetectionEvaluator
from libdet.evaluation.pascal_voc_evaluation import voc_ap, voc_eval
from libdet.structures import Boxes, Instances

ANNOTATIONS = {
    "a": [
        {"name": "dog", "difficult": 0, "bbox": [1, 1, 10, 10]},
        {"name": "dog", "difficult": 1, "bbox": [20, 20, 29, 29]},
    ],
    "b": [
        {"name": "dog", "difficult": 0, "bbox": [1, 1, 10, 10]},
        {"name": "cat", "difficult": 0, "bbox": [30, 30, 40, 40]},
    ],
}
# (image, score, VOC box): TP, duplicate FP, on the difficult object (ignored), FP, TP
DETECTIONS = [
    ("a", 0.9, [1, 1, 10, 10]),
    ("a", 0.8, [1, 1, 10, 10]),
    ("a", 0.7, [20, 20, 29, 29]),
    ("b", 0.6, [50, 50, 60, 60]),
    ("b", 0.5, [1, 1, 10, 10]),
]
AREA_AP = 0.5 * 1.0 + 0.5 * 0.5  # recall 0->0.5 at precision 1, 0.5->1 at precision 0.5
AP07 = (6 * 1.0 + 5 * 0.5) / 11  # recall thresholds 0..0.5 reach precision 1, 0.6..1.0 reach 0.5


def test_voc_eval_hand_computed():
    rec, prec, ap = voc_eval(DETECTIONS[::-1], ANNOTATIONS, "dog", 0.5, use_07_metric=False)
    np.testing.assert_allclose(rec, [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 0.5, 1 / 3, 0.5])
    assert ap == pytest.approx(AREA_AP)
    assert voc_eval(DETECTIONS, ANNOTATIONS, "dog", 0.5, use_07_metric=True)[2] == pytest.approx(AP07)
    assert voc_eval([], ANNOTATIONS, "cat", 0.5)[2] == 0.0


def test_voc_ap_curves():
    assert voc_ap(np.array([0.2, 0.4]), np.array([1.0, 0.5])) == pytest.approx(0.2 * 1.0 + 0.2 * 0.5)
    assert voc_ap(np.array([0.2, 0.4]), np.array([1.0, 0.5]), use_07_metric=True) == pytest.approx(
        (3 * 1.0 + 2 * 0.5) / 11
    )
    # the precision envelope: a later higher precision lifts earlier recall levels
    assert voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)


def _write_voc(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\nb\n")
    for image_id, objects in ANNOTATIONS.items():
        xml = (
            "<annotation>"
            + "".join(
                f"<object><name>{o['name']}</name><difficult>{o['difficult']}</difficult><bndbox>"
                f"<xmin>{o['bbox'][0]}</xmin><ymin>{o['bbox'][1]}</ymin><xmax>{o['bbox'][2]}</xmax><ymax>{o['bbox'][3]}</ymax>"
                "</bndbox></object>"
                for o in objects
            )
            + "</annotation>"
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)


@pytest.mark.parametrize("year,dog_ap", [(2012, AREA_AP), (2007, AP07)])
def test_evaluator_end_to_end(tmp_path, register_dataset, year, dog_ap):
    root = tmp_path / f"VOC{year}"
    _write_voc(root)
    name = register_dataset("voc", dirname=str(root), split="test", year=year, thing_classes=["cat", "dog"])
    evaluator = PascalVOCDetectionEvaluator(name, distributed=False)
    evaluator.reset()
    for image_id in ("a", "b"):
        dets = [d for d in DETECTIONS if d[0] == image_id]
        # libdet boxes are 0-based continuous: VOC's 1-based [x1, y1, x2, y2] is [x1 - 1, y1 - 1, x2, y2]
        boxes = torch.tensor([[b[0] - 1, b[1] - 1, b[2], b[3]] for _, _, b in dets], dtype=torch.float32)
        inst = Instances(
            (64, 64),
            pred_boxes=Boxes(boxes),
            scores=torch.tensor([s for _, s, _ in dets]),
            pred_classes=torch.ones(len(dets), dtype=torch.int64),
        )
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    res = evaluator.evaluate()["bbox"]
    # exact boxes: the dog AP is the same at every IoU threshold; cat has no detection (AP 0)
    for key in ("AP", "AP50", "AP75"):
        assert res[key] == pytest.approx(100 * dog_ap / 2)


def test_evaluator_missing_metadata(register_dataset):
    name = register_dataset("voc_bad", thing_classes=["cat"])
    evaluator = PascalVOCDetectionEvaluator(name, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match="'dirname'"):
        evaluator.evaluate()
