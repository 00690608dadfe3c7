"""The model configs of ``configs/common/models`` build detectron2's exact state dicts, and their small
variants train and infer on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from libdet.config import instantiate

from ._tiny_models import (  # noqa: F401 (single_thread is a fixture)
    NUM_CLASSES,
    load_model_config,
    single_thread,
    synthetic_image,
    tiny_mask_rcnn_c4,
    tiny_mask_rcnn_fpn,
    tiny_retinanet,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# detectron2 state_dict of each config: "key<TAB>[shape]" per line, in order.
REFERENCE = Path(__file__).resolve().parent / "d2_keys"


def _reference_keys(name):
    path = REFERENCE / f"{name}.txt"
    rows = []
    for line in path.read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())))
    return rows


def _keys(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", ["mask_rcnn_fpn", "mask_rcnn_c4", "retinanet"])
def test_state_dict_matches_detectron2(name):
    model = instantiate(load_model_config(name))
    assert _keys(model) == _reference_keys(name)  # same keys, shapes and order


def test_faster_rcnn_is_mask_rcnn_without_mask_branch():
    cfg = load_model_config("mask_rcnn_fpn")
    cfg.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    model = instantiate(cfg)
    expected = [r for r in _reference_keys("mask_rcnn_fpn") if not r[0].startswith("roi_heads.mask_head.")]
    assert _keys(model) == expected
    assert not model.roi_heads.mask_on


def _batch():
    return [
        synthetic_image(0, 64, 96, [[10, 10, 40, 50], [50, 20, 90, 60]], [0, 2]),
        synthetic_image(1, 80, 64, [], []),  # no annotation, another size
    ]


@pytest.mark.parametrize(
    "build,has_masks",
    [(tiny_mask_rcnn_fpn, True), (tiny_mask_rcnn_c4, True), (tiny_retinanet, False)],
    ids=["mask_rcnn_fpn", "mask_rcnn_c4", "retinanet"],
)
def test_tiny_model_trains_and_infers(build, has_masks):
    torch.manual_seed(0)
    model = instantiate(build())
    model.train()
    losses = model(_batch())
    expected = {"loss_cls", "loss_box_reg"} | ({"loss_rpn_cls", "loss_rpn_loc", "loss_mask"} if has_masks else set())
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    model.eval()
    images = [b["image"] for b in _batch()]
    with torch.no_grad():
        outputs = model([{"image": images[0], "height": 128, "width": 192}, {"image": images[1]}])
    assert [o["instances"].image_size for o in outputs] == [(128, 192), (80, 64)]
    for out in outputs:
        inst = out["instances"]
        assert inst.pred_classes.lt(NUM_CLASSES).all()
        boxes = inst.pred_boxes.tensor
        h, w = inst.image_size
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()
        if has_masks:
            assert inst.pred_masks.shape == (len(inst), h, w) and inst.pred_masks.dtype == torch.bool


@pytest.mark.parametrize("build", [tiny_mask_rcnn_fpn, tiny_mask_rcnn_c4, tiny_retinanet])
def test_images_without_objects_give_zero_connected_box_losses(build):
    torch.manual_seed(0)
    model = instantiate(build()).train()
    batch = [synthetic_image(2, 64, 64, [], []), synthetic_image(3, 64, 96, [], [])]
    losses = model(batch)
    for name in ("loss_box_reg", "loss_rpn_loc", "loss_mask"):
        if name in losses:
            assert losses[name].item() == 0.0, name
            assert losses[name].requires_grad, name
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    if hasattr(model, "roi_heads"):
        bbox_pred = model.roi_heads.box_predictor.bbox_pred
        assert bbox_pred.weight.grad is not None and bbox_pred.weight.grad.abs().sum() == 0


def test_training_statistics_go_to_the_event_storage():
    from libdet.utils.events import EventStorage

    torch.manual_seed(0)
    model = instantiate(tiny_mask_rcnn_fpn()).train()
    with EventStorage() as storage:
        model(_batch())
    latest = storage.latest()
    for name in (
        "rpn/num_pos_anchors",
        "rpn/num_neg_anchors",
        "roi_head/num_fg_samples",
        "roi_head/num_bg_samples",
        "fast_rcnn/cls_accuracy",
        "fast_rcnn/fg_cls_accuracy",
        "fast_rcnn/false_negative",
        "mask_rcnn/accuracy",
        "mask_rcnn/false_positive",
        "mask_rcnn/false_negative",
    ):
        assert name in latest, name
    assert 0 <= latest["fast_rcnn/cls_accuracy"][0] <= 1
    retinanet = instantiate(tiny_retinanet()).train()
    with EventStorage() as storage:
        retinanet(_batch())
    assert storage.latest()["num_pos_anchors"][0] > 0
