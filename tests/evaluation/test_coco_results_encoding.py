"""COCOEvaluator's result encoding (masks to RLE, json) against plain pycocotools, and evaluate() without side effects."""

import contextlib
import copy
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from libdet.evaluation.coco_evaluation import (
    COCOEvaluator,
    _encode_masks,
    _evaluate_predictions_on_coco,
    _load_results,
    _nonzero_rows,
    _torch_save,
    instances_to_coco_json,
)
from libdet.structures import Boxes, Instances

from .test_coco_evaluation import CLASS_NAMES, DATASET_IDS, make_coco, reference_results, run_evaluator


@pytest.fixture
def coco_dataset(tmp_path, register_dataset):
    """``make(num_images, seed, num_keypoints=0) -> (dataset name, gt json path, [(image id, Instances)])``."""

    def make(num_images, seed, num_keypoints=0):
        gt, predictions = make_coco(num_images, seed, num_keypoints)
        gt_file = tmp_path / f"gt_{seed}.json"
        gt_file.write_text(json.dumps(gt))
        name = register_dataset(
            "coco_encoding",
            json_file=str(gt_file),
            thing_classes=CLASS_NAMES,
            thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
        )
        return name, str(gt_file), predictions

    return make


def _pycocotools_encode(masks: torch.Tensor) -> list[dict]:
    return mask_util.encode(np.asfortranarray(masks.numpy().astype(np.uint8).transpose(1, 2, 0)))


def _random_masks(rng, n, h, w):
    """Masks with a random blob inside a random box (as a model pastes them), plus random noise masks."""
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        kind = rng.integers(0, 4)
        if kind == 0:
            masks[i] = rng.random((h, w)) < rng.random()
        elif kind == 1:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
            masks[i, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
        elif kind == 2:
            masks[i, :, rng.integers(0, w)] = True  # a full-height column: the box spans every row
        # kind 3: empty
    return torch.from_numpy(masks)


@pytest.mark.parametrize("shape", [(7, 1, 1), (9, 1, 6), (9, 5, 1), (40, 6, 9), (40, 13, 8), (6, 64, 48)])
def test_encode_masks_equals_pycocotools(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(10):
        masks = _random_masks(rng, *shape)
        assert _encode_masks(masks) == _pycocotools_encode(masks)


@pytest.mark.parametrize("width", [1, 7, 8, 24, 31])  # 8 pixels a word where the width allows it
def test_nonzero_rows(width):
    rng = np.random.default_rng(width)
    pixels = (rng.random((5, 9, width)) < 0.05).astype(np.uint8)
    pixels[0] = 0
    pixels[1, :, -1] = 1  # the last pixel of each row
    rows = _nonzero_rows(pixels)
    assert rows.dtype == np.uint8 and np.array_equal(rows, pixels.max(axis=2))


def test_encode_masks_edge_cases():
    h, w = 6, 5
    cases = torch.zeros(8, h, w, dtype=torch.bool)
    cases[1] = True  # full
    cases[2, 0, 0] = True  # first pixel only
    cases[3, -1, -1] = True  # last pixel only
    cases[4, :, 2] = True  # one full column
    cases[5, 3, :] = True  # one full row
    cases[6, 0, :] = True  # top row: the box touches the top, zeros follow in every column
    cases[7, 1:5, 1:4] = True  # a box surrounded by zeros
    assert _encode_masks(cases) == _pycocotools_encode(cases)
    assert _encode_masks(cases[:0]) == []
    # uint8 / float 0-1 masks encode like the bool ones
    assert _encode_masks(cases.to(torch.uint8)) == _pycocotools_encode(cases)
    assert _encode_masks(cases.float()) == _pycocotools_encode(cases)
    # non-contiguous input
    assert _encode_masks(cases.transpose(1, 2)) == _pycocotools_encode(cases.transpose(1, 2).contiguous())


def _previous_encoding(instances, img_id):
    """What instances_to_coco_json wrote before masks were encoded box by box (one result dict at a time)."""
    boxes = instances.pred_boxes.tensor.double()
    boxes[:, 2:] -= boxes[:, :2]
    rles = _pycocotools_encode(instances.pred_masks)
    results = []
    for k in range(len(instances)):
        rle = dict(rles[k], counts=rles[k]["counts"].decode("utf-8"))
        result = {
            "image_id": img_id,
            "category_id": int(instances.pred_classes[k]),
            "bbox": boxes[k].tolist(),
            "score": float(instances.scores[k]),
            "segmentation": rle,
        }
        if instances.has("pred_keypoints"):
            kpts = instances.pred_keypoints[k].double().clone()
            kpts[:, :2] -= 0.5
            result["keypoints"] = kpts.flatten().tolist()
        results.append(result)
    return results


def test_instances_to_coco_json_equals_previous_encoding():
    rng = np.random.default_rng(3)
    n, h, w = 12, 40, 56
    xy = torch.from_numpy(rng.uniform(0, 30, (n, 2))).float()
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.cat([xy, xy + torch.from_numpy(rng.uniform(1, 20, (n, 2))).float()], dim=1))
    inst.scores = torch.from_numpy(rng.random(n)).float()
    inst.pred_classes = torch.from_numpy(rng.integers(0, 3, n))
    inst.pred_masks = _random_masks(rng, n, h, w)
    inst.pred_keypoints = torch.from_numpy(rng.uniform(0, 40, (n, 4, 3))).float()
    ours = instances_to_coco_json(inst, 5)
    assert ours == _previous_encoding(inst, 5)
    assert json.dumps(ours) == json.dumps(_previous_encoding(inst, 5))  # the same bytes in the results file
    with pytest.raises(ValueError, match="image_id 5: pred_masks must be"):
        inst.pred_masks = inst.pred_masks[:, None]
        instances_to_coco_json(inst, 5)


def test_written_results_equal_the_reference(coco_dataset, tmp_path):
    name, _, predictions = coco_dataset(num_images=40, seed=21)
    out = tmp_path / "out"
    run_evaluator(COCOEvaluator(name, output_dir=str(out)), predictions)
    written = json.loads((out / "coco_instances_results.json").read_text())
    ref = reference_results(predictions)
    key = lambda r: (r["image_id"], r["score"])  # noqa: E731
    for ours, theirs in zip(sorted(written, key=key), sorted(ref, key=key), strict=True):
        theirs = dict(theirs, segmentation=dict(theirs["segmentation"]))
        theirs["segmentation"]["counts"] = theirs["segmentation"]["counts"].decode()
        assert ours == theirs


@pytest.mark.parametrize("use_fast_impl", [False, True])
def test_evaluate_does_not_modify_predictions(coco_dataset, use_fast_impl):
    name, _, predictions = coco_dataset(num_images=30, seed=22, num_keypoints=4)
    evaluator = COCOEvaluator(name, kpt_oks_sigmas=(0.05, 0.08, 0.1, 0.07), use_fast_impl=use_fast_impl)
    evaluator.reset()
    evaluator.process([{"image_id": i} for i, _ in predictions], [{"instances": p} for _, p in predictions])
    before = copy.deepcopy(evaluator._predictions)
    first = evaluator.evaluate()
    assert set(first) == {"bbox", "segm", "keypoints"}
    assert evaluator._predictions == before
    second = evaluator.evaluate()
    assert first == second or all(
        np.array_equal(list(first[t].values()), list(second[t].values()), equal_nan=True) for t in first
    )


def test_load_results_equals_load_res(coco_dataset):
    _, gt_file, predictions = coco_dataset(num_images=100, seed=23)  # > 255 results: area() is chunked
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
    segm = [{k: v for k, v in r.items() if k != "bbox"} for r in reference_results(predictions)]
    with contextlib.redirect_stdout(io.StringIO()):
        ours = _load_results(coco_gt, copy.deepcopy(segm))
        theirs = coco_gt.loadRes(copy.deepcopy(segm))
    assert ours.dataset["images"] == theirs.dataset["images"]
    assert ours.dataset["categories"] == theirs.dataset["categories"]
    assert list(ours.anns) == list(theirs.anns)
    for ann_id, ann in theirs.anns.items():
        mine = ours.anns[ann_id]
        assert set(mine) == set(ann)
        assert type(mine["area"]) is type(ann["area"]) and mine["area"] == ann["area"]
        np.testing.assert_array_equal(mine["bbox"], ann["bbox"])
        assert {k: v for k, v in mine.items() if k not in ("bbox", "area")} == {
            k: v for k, v in ann.items() if k not in ("bbox", "area")
        }
    assert {k: len(v) for k, v in ours.imgToAnns.items()} == {k: len(v) for k, v in theirs.imgToAnns.items()}
    with pytest.raises(AssertionError, match="Results do not correspond"):
        _load_results(coco_gt, [dict(segm[0], image_id=99999)])


def test_evaluate_predictions_on_coco_leaves_its_input_alone(coco_dataset):
    _, gt_file, predictions = coco_dataset(num_images=20, seed=24)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
    ref = reference_results(predictions)
    before = copy.deepcopy(ref)
    for task in ("bbox", "segm"):
        for fast in (False, True):
            _evaluate_predictions_on_coco(coco_gt, ref, task, use_fast_impl=fast)
            assert ref == before


@pytest.mark.parametrize("length", [0, 1, 3, 4, 7])
def test_dump_json_in_chunks_writes_json_dumps_text(monkeypatch, length):
    import libdet.evaluation.coco_evaluation as coco_module

    monkeypatch.setattr(coco_module, "_JSON_CHUNK", 3)
    items = [
        {"image_id": i, "category_id": 2, "bbox": [0.1 * i, 1e-7, 3.0, 1 / 3], "score": 0.5, "segmentation": {
            "size": [4, 5], "counts": "0\\\\1`o"}}
        for i in range(length)
    ]  # fmt: skip
    for obj in (items, {"not": "a list"}):
        f = io.BytesIO()
        coco_module._dump_json(obj, f)
        assert f.getvalue() == json.dumps(obj).encode("ascii")


def test_torch_save_writes_what_torch_save_writes():
    results = [
        {"image_id": i, "instances": [{"image_id": i, "bbox": [0.5, 1.0, 2.0, 3.0], "score": 0.25 * i, "x": None}]}
        for i in range(50)
    ]
    ours, theirs = io.BytesIO(), io.BytesIO()
    _torch_save(results, ours)
    torch.save(results, theirs)
    assert ours.getvalue() == theirs.getvalue()
    assert torch.load(io.BytesIO(ours.getvalue()), weights_only=True) == results
    # with tensors inside: torch.save itself
    with_tensors = [{"image_id": 1, "proposals": torch.arange(6.0).reshape(2, 3)}]
    ours = io.BytesIO()
    _torch_save(with_tensors, ours)
    loaded = torch.load(io.BytesIO(ours.getvalue()), weights_only=True)
    assert torch.equal(loaded[0]["proposals"], with_tensors[0]["proposals"])
