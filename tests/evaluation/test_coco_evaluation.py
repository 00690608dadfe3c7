"""COCOEvaluator end to end from ``Instances`` against a direct pycocotools computation on the same json."""

import contextlib
import io
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from libdet.evaluation.coco_evaluation import COCOEvaluator, instances_to_coco_json
from libdet.structures import Boxes, Instances

H = W = 64
DATASET_IDS = [1, 3, 7]  # non-contiguous on purpose
CLASS_NAMES = ["cat", "dog", "bird"]


def _ellipse_mask(x0, y0, x1, y1):
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1)
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1


def _random_box(rng):
    w, h = rng.uniform(4, 40, size=2)
    x0, y0 = rng.uniform(0, W - w), rng.uniform(0, H - h)
    return [x0, y0, x0 + w, y0 + h]


def make_coco(num_images, seed, num_keypoints=0, crowd=True):
    """A generated COCO gt json and per-image predictions (``Instances``) jittered from the gt."""
    rng = np.random.default_rng(seed)
    images, annotations, predictions = [], [], []
    cats = [{"id": i, "name": n} for i, n in zip(DATASET_IDS, CLASS_NAMES)]
    if num_keypoints:
        for c in cats:
            c["keypoints"] = [f"k{j}" for j in range(num_keypoints)]
            c["skeleton"] = []
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id * 10, "height": H, "width": W, "file_name": f"{img_id}.png"})
        boxes, scores, classes, masks, kpts = [], [], [], [], []
        for _ in range(rng.integers(0, 5)):
            box = _random_box(rng)
            c = int(rng.integers(0, 3))
            mask = _ellipse_mask(*box)
            if mask.sum() == 0:
                continue
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            iscrowd = int(crowd and rng.random() < 0.05)
            ann = {
                "id": len(annotations) + 1,
                "image_id": img_id * 10,
                "category_id": DATASET_IDS[c],
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "area": float(mask.sum()),
                "iscrowd": iscrowd,
                "segmentation": rle,
            }
            if num_keypoints:
                kp = np.stack(
                    [
                        rng.uniform(box[0], box[2], num_keypoints),
                        rng.uniform(box[1], box[3], num_keypoints),
                        np.full(num_keypoints, 2.0),
                    ],
                    axis=1,
                )
                ann["keypoints"] = kp.round().flatten().tolist()
                ann["num_keypoints"] = num_keypoints
            annotations.append(ann)
            # a detection close to the gt (sometimes of the wrong class)
            jitter = rng.normal(0, 2.0, size=4)
            boxes.append(np.clip(np.array(box) + jitter, 0, W))
            scores.append(rng.uniform(0.3, 1.0))
            classes.append(c if rng.random() < 0.85 else int(rng.integers(0, 3)))
            masks.append(_ellipse_mask(*boxes[-1]))
            if num_keypoints:
                kp_pred = np.array(ann["keypoints"]).reshape(-1, 3).copy()
                kp_pred[:, :2] += rng.normal(0, 1.5, size=(num_keypoints, 2)) + 0.5
                kp_pred[:, 2] = rng.uniform(0, 1, num_keypoints)
                kpts.append(kp_pred)
        for _ in range(rng.integers(0, 4)):  # false positives
            boxes.append(np.array(_random_box(rng)))
            scores.append(rng.uniform(0.0, 0.8))
            classes.append(int(rng.integers(0, 3)))
            masks.append(_ellipse_mask(*boxes[-1]))
            if num_keypoints:
                b = boxes[-1]
                kpts.append(
                    np.stack(
                        [
                            rng.uniform(b[0], b[2], num_keypoints),
                            rng.uniform(b[1], b[3], num_keypoints),
                            rng.uniform(0, 1, num_keypoints),
                        ],
                        axis=1,
                    )
                )
        inst = Instances((H, W))
        inst.pred_boxes = Boxes(torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inst.pred_masks = torch.tensor(np.array(masks), dtype=torch.bool).reshape(-1, H, W)
        if num_keypoints:
            inst.pred_keypoints = torch.tensor(np.array(kpts), dtype=torch.float32).reshape(-1, num_keypoints, 3)
        predictions.append((img_id * 10, inst))
    gt = {"images": images, "annotations": annotations, "categories": cats}
    return gt, predictions


def reference_results(predictions, top_k=None):
    """The same predictions written as COCO results by hand (independent of instances_to_coco_json)."""
    results = []
    for img_id, inst in predictions:
        order = np.argsort(-inst.scores.numpy(), kind="stable")
        if top_k is not None:
            order = order[:top_k]
        for i in order:
            x0, y0, x1, y1 = inst.pred_boxes.tensor[i].double().tolist()
            rle = mask_util.encode(np.asfortranarray(inst.pred_masks[i].numpy().astype(np.uint8)))
            r = {
                "image_id": img_id,
                "category_id": DATASET_IDS[int(inst.pred_classes[i])],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(inst.scores[i]),
                "segmentation": rle,
            }
            if inst.has("pred_keypoints"):
                kp = inst.pred_keypoints[i].double().clone()
                kp[:, :2] -= 0.5
                r["keypoints"] = kp.flatten().tolist()
            results.append(r)
    return results


def pycocotools_stats(gt_file, results, iou_type, sigmas=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
        res = [dict(r) for r in results]
        if iou_type == "segm":
            for r in res:
                r.pop("bbox")
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.array(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def run_evaluator(evaluator, predictions, batch=4):
    evaluator.reset()
    for i in range(0, len(predictions), batch):
        chunk = predictions[i : i + batch]
        evaluator.process([{"image_id": img_id} for img_id, _ in chunk], [{"instances": inst} for _, inst in chunk])
    return evaluator.evaluate()


@pytest.fixture
def coco_dataset(tmp_path, register_dataset):
    def make(num_images=150, seed=0, num_keypoints=0, **extra_meta):
        gt, predictions = make_coco(num_images, seed, num_keypoints)
        gt_file = str(tmp_path / f"gt_{seed}_{num_keypoints}.json")
        with open(gt_file, "w") as f:
            json.dump(gt, f)
        name = register_dataset(
            "coco",
            json_file=gt_file,
            thing_classes=CLASS_NAMES,
            thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
            **extra_meta,
        )
        return name, gt_file, predictions

    return make


def _assert_matches(results, stats, metrics):
    for idx, metric in enumerate(metrics):
        expected = stats[idx] * 100 if stats[idx] >= 0 else float("nan")
        np.testing.assert_allclose(results[metric], expected, rtol=0, atol=1e-9, err_msg=metric)


@pytest.mark.parametrize("use_fast_impl", [False, True])
def test_bbox_segm_parity_with_pycocotools(coco_dataset, tmp_path, use_fast_impl):
    name, gt_file, predictions = coco_dataset(num_images=300, seed=0)
    out = tmp_path / "out"
    results = run_evaluator(COCOEvaluator(name, output_dir=str(out), use_fast_impl=use_fast_impl), predictions)
    assert set(results) == {"bbox", "segm"}
    ref = reference_results(predictions)
    metrics = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    _assert_matches(results["bbox"], pycocotools_stats(gt_file, ref, "bbox"), metrics)
    _assert_matches(results["segm"], pycocotools_stats(gt_file, ref, "segm"), metrics)
    assert 10 < results["bbox"]["AP"] < 95  # a meaningful, non-degenerate value
    assert {f"AP-{n}" for n in CLASS_NAMES} <= set(results["bbox"])
    # the written results are the same json pycocotools consumed
    written = json.load(open(out / "coco_instances_results.json"))
    assert len(written) == len(ref)
    assert sorted({r["category_id"] for r in written}) == DATASET_IDS
    assert os.path.exists(out / "instances_predictions.pth")
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_per_category_ap_matches_pycocotools(coco_dataset):
    name, gt_file, predictions = coco_dataset(num_images=60, seed=1)
    results = run_evaluator(COCOEvaluator(name, tasks=("bbox",), use_fast_impl=False), predictions)
    ref = reference_results(predictions)
    for cat_id, cls in zip(DATASET_IDS, CLASS_NAMES):
        only = [r for r in ref if r["category_id"] == cat_id]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(gt_file)
            ev = COCOeval(coco_gt, coco_gt.loadRes(only), "bbox")
            ev.params.catIds = [cat_id]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        np.testing.assert_allclose(results["bbox"][f"AP-{cls}"], ev.stats[0] * 100, atol=1e-9)


def test_keypoints_with_custom_sigmas(coco_dataset):
    sigmas = [0.05, 0.08, 0.1, 0.07]
    name, gt_file, predictions = coco_dataset(num_images=80, seed=2, num_keypoints=4)
    evaluator = COCOEvaluator(name, tasks=("keypoints",), kpt_oks_sigmas=sigmas, use_fast_impl=False)
    results = run_evaluator(evaluator, predictions)
    stats = pycocotools_stats(gt_file, reference_results(predictions), "keypoints", sigmas=sigmas)
    _assert_matches(results["keypoints"], stats, ["AP", "AP50", "AP75", "APm", "APl"])
    assert results["keypoints"]["AP"] > 1


def test_keypoints_without_sigmas_errors(coco_dataset):
    name, _, predictions = coco_dataset(num_images=5, seed=3, num_keypoints=4)
    with pytest.raises(ValueError, match="kpt_oks_sigmas"):
        run_evaluator(COCOEvaluator(name, tasks=("keypoints",), use_fast_impl=False), predictions)
    with pytest.raises(ValueError, match="3 entries"):
        run_evaluator(
            COCOEvaluator(name, tasks=("keypoints",), kpt_oks_sigmas=(0.1,) * 3, use_fast_impl=False), predictions
        )


def test_keypoints_17_use_coco_sigmas(coco_dataset):
    name, gt_file, predictions = coco_dataset(num_images=20, seed=4, num_keypoints=17)
    results = run_evaluator(COCOEvaluator(name, tasks=("keypoints",), use_fast_impl=False), predictions)
    stats = pycocotools_stats(gt_file, reference_results(predictions), "keypoints")
    _assert_matches(results["keypoints"], stats, ["AP", "AP50", "AP75", "APm", "APl"])


@pytest.mark.parametrize("max_dets", [2, 5])
def test_max_dets_per_image(coco_dataset, max_dets):
    name, gt_file, predictions = coco_dataset(num_images=120, seed=5)
    ev = COCOEvaluator(name, tasks=("bbox",), max_dets_per_image=max_dets, use_fast_impl=False)
    res = run_evaluator(ev, predictions)["bbox"]
    res100 = run_evaluator(COCOEvaluator(name, tasks=("bbox",), use_fast_impl=False), predictions)["bbox"]
    # Reference: keep the top detections per image by hand and evaluate with stock pycocotools (maxDets 100).
    stats = pycocotools_stats(gt_file, reference_results(predictions, top_k=max_dets), "bbox")
    _assert_matches(res, stats, ["AP", "AP50", "AP75", "APs", "APm", "APl"])
    assert res["AP"] < res100["AP"]


def test_max_dets_reaches_cocoeval_params(coco_dataset):
    from libdet.evaluation.coco_evaluation import _derive_coco_results, _evaluate_predictions_on_coco

    name, gt_file, predictions = coco_dataset(num_images=60, seed=5)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
    ref = reference_results(predictions)
    ev = _evaluate_predictions_on_coco(coco_gt, ref, "bbox", use_fast_impl=False, max_dets_per_image=3)
    assert sorted(ev.params.maxDets) == [1, 3, 10]
    import logging

    res = _derive_coco_results(ev, "bbox", CLASS_NAMES, logging.getLogger("t"), max_dets=3)
    # pycocotools' own per-(image, category) truncation at maxDets=3, read at that maxDets
    with contextlib.redirect_stdout(io.StringIO()):
        ref_ev = COCOeval(coco_gt, coco_gt.loadRes(ref), "bbox")
        ref_ev.params.maxDets = [3]
        ref_ev.evaluate()
        ref_ev.accumulate()
    p = ref_ev.eval["precision"][:, :, :, 0, 0]
    np.testing.assert_allclose(res["AP"], np.mean(p[p > -1]) * 100, atol=1e-9)


def test_empty_predictions_give_zeros(coco_dataset, caplog):
    name, _, predictions = coco_dataset(num_images=5, seed=6)
    empty = [(img_id, inst[inst.scores < -1]) for img_id, inst in predictions]
    results = run_evaluator(COCOEvaluator(name, tasks=("bbox", "segm"), use_fast_impl=False), empty)
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == 0.0 and results[task]["AP-dog"] == 0.0
    results = run_evaluator(COCOEvaluator(name, use_fast_impl=False), [])
    assert results["bbox"]["AP50"] == 0.0
    assert "Did not receive valid predictions" in caplog.text


def test_unknown_image_id_errors(coco_dataset):
    name, _, predictions = coco_dataset(num_images=5, seed=7)
    bad = [(12345, predictions[0][1])]
    with pytest.raises(ValueError, match="12345"):
        run_evaluator(COCOEvaluator(name, use_fast_impl=False), bad)


def test_unknown_category_errors(coco_dataset):
    name, _, predictions = coco_dataset(num_images=5, seed=8)
    img_id, inst = next((i, p) for i, p in predictions if len(p))
    inst = inst[:1]
    inst.pred_classes = torch.tensor([9])
    with pytest.raises(ValueError, match=rf"image_id {img_id}: predicted category 9"):
        run_evaluator(COCOEvaluator(name, use_fast_impl=False), [(img_id, inst)])


def test_nan_box_errors(coco_dataset):
    name, _, predictions = coco_dataset(num_images=5, seed=9)
    img_id, inst = next((i, p) for i, p in predictions if len(p))
    inst.pred_boxes.tensor[0, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"image_id {img_id}: predicted box 0 is not finite"):
        run_evaluator(COCOEvaluator(name, use_fast_impl=False), [(img_id, inst)])
    inst2 = Instances(
        (H, W), pred_boxes=Boxes(torch.zeros(1, 4)), scores=torch.tensor([float("inf")]), pred_classes=torch.tensor([0])
    )
    with pytest.raises(ValueError, match="score 0 is not finite"):
        instances_to_coco_json(inst2, 77)


def test_malformed_rle_errors(coco_dataset):
    from libdet.evaluation.coco_evaluation import _check_results

    name, gt_file, predictions = coco_dataset(num_images=3, seed=10)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
    good = mask_util.encode(np.asfortranarray(np.ones((H, W), np.uint8)))
    good["counts"] = good["counts"].decode()
    base = {"image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    _check_results(coco_gt, [dict(base, segmentation=good)], "segm")  # valid: no error
    for bad in (
        {"size": [H, W], "counts": good["counts"][:-1]},  # truncated string
        {"size": [H, W], "counts": "00"},  # wrong total length
        {"size": [H, W + 1], "counts": good["counts"]},  # wrong size
        {"size": [H, W], "counts": [1, 2, -3]},
        [[0, 0, 1, 1, 2, 2]],
    ):  # a polygon, not RLE
        with pytest.raises(ValueError, match="image_id 10"):
            _check_results(coco_gt, [dict(base, segmentation=bad)], "segm")


def test_rle_string_decoder_matches_pycocotools():
    from libdet.evaluation.coco_evaluation import _rle_string_counts

    rng = np.random.default_rng(0)
    for _ in range(20):
        m = (rng.random((37, 23)) < rng.random()).astype(np.uint8)
        rle = mask_util.encode(np.asfortranarray(m))
        runs = _rle_string_counts(rle["counts"].decode())
        assert sum(runs) == m.size
        flat = np.concatenate([np.full(r, i % 2, np.uint8) for i, r in enumerate(runs)])
        np.testing.assert_array_equal(flat, m.flatten(order="F"))


def test_results_written_atomically(coco_dataset, tmp_path, monkeypatch):
    name, _, predictions = coco_dataset(num_images=5, seed=11)
    out = tmp_path / "atomic"
    out.mkdir()
    (out / "coco_instances_results.json").write_text("OLD")
    import libdet.evaluation.coco_evaluation as coco_module

    def failing_dump(obj, f):
        f.write(b'[{"partial": ')
        raise RuntimeError("disk full")

    monkeypatch.setattr(coco_module, "_dump_json", failing_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        run_evaluator(COCOEvaluator(name, output_dir=str(out), use_fast_impl=False), predictions)
    assert (out / "coco_instances_results.json").read_text() == "OLD"
    assert sorted(os.listdir(out)) == ["coco_instances_results.json", "instances_predictions.pth"]


def test_evaluate_twice_is_stable(coco_dataset):
    name, _, predictions = coco_dataset(num_images=20, seed=12)
    evaluator = COCOEvaluator(name, tasks=("bbox",), use_fast_impl=False)
    first = run_evaluator(evaluator, predictions)
    second = evaluator.evaluate()
    assert list(second["bbox"]) == list(first["bbox"])
    np.testing.assert_array_equal(list(second["bbox"].values()), list(first["bbox"].values()))


def test_box_proposals_recall(coco_dataset):
    name, gt_file, predictions = coco_dataset(num_images=10, seed=13)
    gt = json.load(open(gt_file))
    outputs = []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and not a["iscrowd"]]
        boxes = torch.tensor(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        ).reshape(-1, 4)
        props = Instances((H, W), proposal_boxes=Boxes(boxes), objectness_logits=torch.ones(len(boxes)))
        outputs.append(({"image_id": img["id"]}, {"proposals": props}))
    evaluator = COCOEvaluator(name, use_fast_impl=False)
    evaluator.reset()
    for inp, out in outputs:
        evaluator.process([inp], [out])
    res = evaluator.evaluate()["box_proposals"]
    assert res["AR@100"] == pytest.approx(100.0)  # the proposals are exactly the gt boxes
    assert res["AR@1000"] == pytest.approx(100.0)


def test_dataset_without_json_file_is_converted(tmp_path, register_dataset):
    from libdet.structures import BoxMode

    gt, predictions = make_coco(20, seed=14, crowd=False)
    id_map = {d: i for i, d in enumerate(DATASET_IDS)}
    dicts = []
    for img in gt["images"]:
        anns = [
            {"bbox": a["bbox"], "bbox_mode": BoxMode.XYWH_ABS, "category_id": id_map[a["category_id"]], "iscrowd": 0}
            for a in gt["annotations"]
            if a["image_id"] == img["id"]
        ]
        dicts.append(
            {"file_name": img["file_name"], "image_id": img["id"], "height": H, "width": W, "annotations": anns}
        )
    name = register_dataset("coco_convert", dicts, thing_classes=CLASS_NAMES, thing_dataset_id_to_contiguous_id=id_map)
    results = run_evaluator(
        COCOEvaluator(name, tasks=("bbox",), output_dir=str(tmp_path / "conv"), use_fast_impl=False), predictions
    )
    # the same boxes as gt json (box areas for the ranges, as convert_to_coco_json writes without masks)
    for a in gt["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
        a.pop("segmentation")
    gt_file = tmp_path / "direct.json"
    gt_file.write_text(json.dumps(gt))
    stats = pycocotools_stats(str(gt_file), reference_results(predictions), "bbox")
    _assert_matches(results["bbox"], stats, ["AP", "AP50", "AP75"])


@pytest.mark.parametrize("use_fast_impl", [False, True])
@pytest.mark.parametrize("corrupt", ["wrong_total", "truncated"])
def test_malformed_rle_from_the_evaluator_names_the_image(coco_dataset, use_fast_impl, corrupt):
    """End to end, on both paths: the native one leaves the run-length check to the C++ evaluator."""
    name, _, predictions = coco_dataset(num_images=3, seed=12)
    evaluator = COCOEvaluator(name, tasks=("segm",), use_fast_impl=use_fast_impl)
    evaluator.reset()
    evaluator.process([{"image_id": i} for i, _ in predictions], [{"instances": p} for _, p in predictions])
    target = next(p for p in evaluator._predictions if p.get("instances"))
    rle = target["instances"][0]["segmentation"]
    rle["counts"] = "0" + rle["counts"] if corrupt == "wrong_total" else rle["counts"] + "o"
    with pytest.raises(ValueError, match=f"image id {target['image_id']}|image_id {target['image_id']}"):
        evaluator.evaluate()
