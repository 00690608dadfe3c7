"""Panoptic FPN: the instance/stuff merging heuristic on a hand-built example (exact map and segments),
and the tiny model: losses (with the semantic loss weight), inference outputs."""

from __future__ import annotations

import pytest
import torch

from libdet.config import instantiate
from libdet.modeling.meta_arch.panoptic_fpn import PanopticFPN, combine_semantic_and_instance_outputs
from libdet.structures import Instances

from ._tiny_models import (  # noqa: F401 (single_thread is a fixture)
    NUM_CLASSES,
    NUM_SEM_CLASSES,
    mapped_example_with_crowd,
    single_thread,
    synthetic_image,
    tiny_panoptic_fpn,
)


def _mask(rows, cols, size=8):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def _hand_built():
    masks = torch.stack(
        [
            _mask((0, 4), (1, 5)),  # 0: score .8, 12 of its 16 px under instance 1 -> rejected
            _mask((0, 4), (0, 4)),  # 1: score .9, pasted first
            _mask((2, 6), (3, 7)),  # 2: score .7, 2 of 16 px under instance 1 -> pasted on 14 px
            torch.zeros(8, 8, dtype=torch.bool),  # 3: score .6, empty -> skipped
            _mask((6, 8), (0, 2)),  # 4: score .3, below the score threshold
        ]
    )
    instances = Instances(
        (8, 8),
        scores=torch.tensor([0.8, 0.9, 0.7, 0.6, 0.3]),
        pred_classes=torch.tensor([1, 2, 0, 1, 1]),
        pred_masks=masks,
    )
    semantic = torch.zeros(8, 8, dtype=torch.int64)  # 0 = thing
    semantic[6:8, :] = 1  # 16 px of stuff 1
    semantic[0:6, 7] = 2  # 6 px of stuff 2
    semantic[4:6, 0:2] = 3  # 4 px of stuff 3: below the area threshold
    return instances, semantic


def test_combine_semantic_and_instance_outputs_hand_built():
    instances, semantic = _hand_built()
    panoptic, segments = combine_semantic_and_instance_outputs(
        instances, semantic, overlap_threshold=0.5, stuff_area_thresh=5, instances_score_thresh=0.5
    )
    expected = torch.zeros(8, 8, dtype=torch.int32)
    expected[0:4, 0:4] = 1
    expected[2:6, 3:7] = torch.where(expected[2:6, 3:7] > 0, expected[2:6, 3:7], torch.tensor(2, dtype=torch.int32))
    expected[6:8, :] = 3
    expected[0:6, 7] = 4
    assert panoptic.dtype == torch.int32
    assert torch.equal(panoptic, expected)
    assert int((panoptic == 2).sum()) == 14
    assert segments == [
        {"id": 1, "isthing": True, "score": pytest.approx(0.9), "category_id": 2, "instance_id": 1},
        {"id": 2, "isthing": True, "score": pytest.approx(0.7), "category_id": 0, "instance_id": 2},
        {"id": 3, "isthing": False, "category_id": 1, "area": 16},
        {"id": 4, "isthing": False, "category_id": 2, "area": 6},
    ]


def test_combine_thresholds_change_the_result():
    instances, semantic = _hand_built()
    # A looser overlap threshold accepts instance 0 on its 4 uncovered pixels (column 4, rows 0-3).
    panoptic, segments = combine_semantic_and_instance_outputs(instances, semantic, 0.8, 5, 0.5)
    assert [s.get("instance_id") for s in segments if s["isthing"]] == [1, 0, 2]
    assert torch.equal(panoptic[0:4, 4], torch.full((4,), 2, dtype=torch.int32))
    # A lower score threshold adds instance 4, which then covers 4 px of stuff 1.
    _, segments = combine_semantic_and_instance_outputs(instances, semantic, 0.5, 5, 0.2)
    assert [s.get("instance_id") for s in segments if s["isthing"]] == [1, 2, 4]
    assert [s["area"] for s in segments if not s["isthing"]] == [12, 6]
    # No stuff threshold: stuff 3 appears too.
    _, segments = combine_semantic_and_instance_outputs(instances, semantic, 0.5, 0, 0.5)
    assert [s["category_id"] for s in segments if not s["isthing"]] == [1, 2, 3]


def test_combine_without_instances_and_errors():
    semantic = torch.ones(4, 4, dtype=torch.int64)
    empty = Instances(
        (4, 4), scores=torch.zeros(0), pred_classes=torch.zeros(0, dtype=torch.int64),
        pred_masks=torch.zeros(0, 4, 4, dtype=torch.bool),
    )  # fmt: skip
    panoptic, segments = combine_semantic_and_instance_outputs(empty, semantic, 0.5, 4, 0.5)
    assert torch.equal(panoptic, torch.ones(4, 4, dtype=torch.int32))
    assert segments == [{"id": 1, "isthing": False, "category_id": 1, "area": 16}]
    with pytest.raises(ValueError, match="no `pred_masks` field"):
        combine_semantic_and_instance_outputs(
            Instances((4, 4), scores=torch.zeros(0), pred_classes=torch.zeros(0)), semantic, 0.5, 4, 0.5
        )
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        combine_semantic_and_instance_outputs(empty, semantic[None], 0.5, 4, 0.5)


def _batch(tmp_path):
    labelled = synthetic_image(0, 64, 96, [[10, 10, 40, 50], [50, 20, 90, 60]], [0, 2])
    sem = torch.ones(64, 96, dtype=torch.int64)
    sem[40:] = 2
    sem[10:50, 10:40] = 0
    sem[20:60, 50:90] = 0
    labelled["sem_seg"] = sem
    empty = synthetic_image(1, 80, 64, [], [])  # no object, only stuff
    empty["sem_seg"] = torch.full((80, 64), 3, dtype=torch.int64)
    crowd = mapped_example_with_crowd(tmp_path)  # one instance (polygon mask) left: the crowd is dropped
    return [labelled, empty, crowd]


@pytest.mark.usefixtures("single_thread")
def test_tiny_panoptic_fpn_trains_and_infers(tmp_path):
    torch.manual_seed(0)
    model = instantiate(tiny_panoptic_fpn())
    assert isinstance(model, PanopticFPN) and model.sem_seg_head.loss_weight == 0.5
    batch = _batch(tmp_path)
    model.train()
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.sem_seg_head.predictor.weight.grad.abs().sum() > 0
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0

    # loss_sem_seg is the head's loss times its loss_weight (instance losses are not reweighted).
    model.sem_seg_head.loss_weight = 1.0
    again = model(batch)
    assert again["loss_sem_seg"].item() == pytest.approx(2 * losses["loss_sem_seg"].item(), rel=1e-5)

    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['sem_seg'\]"):
        model([synthetic_image(0, 64, 64, [[1, 1, 30, 30]], [0])])

    model.eval()
    model.combine_stuff_area_thresh = 16
    model.combine_instances_score_thresh = 0.0
    with torch.no_grad():
        outputs = model([{"image": batch[0]["image"], "height": 128, "width": 192}, {"image": batch[1]["image"]}])
    for out, (h, w) in zip(outputs, [(128, 192), (80, 64)]):
        assert set(out) == {"sem_seg", "instances", "panoptic_seg"}
        assert out["sem_seg"].shape == (NUM_SEM_CLASSES, h, w)
        assert out["instances"].image_size == (h, w) and out["instances"].pred_masks.shape[1:] == (h, w)
        assert out["instances"].pred_classes.lt(NUM_CLASSES).all()
        panoptic, segments = out["panoptic_seg"]
        assert panoptic.shape == (h, w) and panoptic.dtype == torch.int32
        ids = sorted(int(i) for i in panoptic.unique() if i > 0)
        assert ids == [s["id"] for s in segments] == list(range(1, len(segments) + 1))
        for s in segments:
            if s["isthing"]:
                assert 0 <= s["instance_id"] < len(out["instances"]) and s["score"] >= 0
            else:
                assert s["area"] == int((panoptic == s["id"]).sum()) >= 16 and 0 < s["category_id"] < NUM_SEM_CLASSES

    with torch.no_grad():
        raw_instances, raw_sem_seg = model.inference([{"image": batch[1]["image"]}], do_postprocess=False)
    assert len(raw_instances) == 1 and raw_sem_seg.shape == (1, NUM_SEM_CLASSES, 96, 64)  # padded to 32
