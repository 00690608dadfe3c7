"""TensorMask: assignment rule, anchors, head shapes, detectron2 keys, train step and inference."""

import pickle
from pathlib import Path

import pytest
import torch
from tensormask import TensorMaskAnchorGenerator, TensorMaskHead, assignment_rule

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.layers import ShapeSpec
from libdet.structures import BitMasks, Boxes, Instances

PROJECT = Path(__file__).resolve().parents[1]
KEYS_FILE = Path(__file__).with_name("tensormask_R_50_FPN_1x_keys.txt")


# A 20 px box centred at (20, 20); unit length 4, min_anchor_size 40 (so anchors up to 40 + 4 px qualify).
GT = Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0]]))
ANCHORS = Boxes(
    torch.tensor(
        [
            [0.0, 0.0, 40.0, 40.0],  # contains it, same centre, 40 - 4 <= 40: foreground
            [-20.0, -20.0, 60.0, 60.0],  # contains it, same centre, but 80 - 4 > 40: too large
            [6.0, 6.0, 46.0, 46.0],  # contains it, centre 1.5 units away on both axes: off-centre
            [12.0, 0.0, 52.0, 40.0],  # does not contain it (left edge 12 > 10)
            [2.0, 2.0, 42.0, 42.0],  # contains it, centre 0.5 units away per axis (0.71 units): foreground
        ]
    )
)
UNITS = torch.full((5,), 4.0)


def test_assignment_contained_scale_centre():
    matches, labels = assignment_rule(GT, ANCHORS, UNITS, min_anchor_size=40.0)
    assert labels.dtype == torch.int8
    assert labels.tolist() == [1, 0, 0, 0, 1]
    assert matches[labels == 1].tolist() == [0, 0]


def test_assignment_scale_uses_the_box_size_above_the_minimum():
    # With a 10 px minimum the upper size is 2 x 20 = 40: the 40 px anchor (36 after the unit length) still fits,
    # the 46 px one (42) does not.
    anchors = Boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0], [-3.0, -3.0, 43.0, 43.0]]))
    _, labels = assignment_rule(GT, anchors, torch.full((2,), 4.0), min_anchor_size=10.0)
    assert labels.tolist() == [1, 0]


def test_assignment_ambiguous_anchors():
    # A second box inside the first anchor, with the same centre: that anchor has two candidates.
    gt = Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0], [12.0, 12.0, 28.0, 28.0]]))
    _, labels = assignment_rule(gt, ANCHORS, UNITS, min_anchor_size=40.0)
    assert labels.tolist() == [0, 0, 0, 0, 0]  # both candidates of anchors 0 and 4: background when unique
    _, labels = assignment_rule(gt, ANCHORS, UNITS, min_anchor_size=40.0, uniqueness_on=False)
    assert labels.tolist() == [-1, 0, 0, 0, -1]


def test_assignment_without_boxes():
    matches, labels = assignment_rule(Boxes(torch.zeros(0, 4)), ANCHORS, UNITS, min_anchor_size=40.0)
    assert matches.shape == (5,) and labels.tolist() == [0] * 5
    with pytest.raises(ValueError, match="unit_lengths"):
        assignment_rule(GT, ANCHORS, torch.ones(3), min_anchor_size=40.0)


def test_anchor_counts_and_index_layout():
    generator = TensorMaskAnchorGenerator(sizes=[[8, 12], [16, 24]], aspect_ratios=[1.0], strides=[4, 8], offset=0.0)
    features = [torch.zeros(2, 1, 3, 5), torch.zeros(2, 1, 2, 3)]
    anchors, unit_lengths, indexes = generator(features)
    assert [len(a) for a in anchors] == [3 * 5 * 2, 2 * 3 * 2]
    assert [u.unique().tolist() for u in unit_lengths] == [[4.0], [8.0]]
    for level, (boxes, index) in enumerate(zip(anchors, indexes)):
        assert index.dtype == torch.int64 and index.shape == (len(boxes), 5)
        # Rows (level, image 0, row, column, anchor), in the anchors' order: row, then column, then anchor.
        height, width = features[level].shape[-2:]
        expected = [(level, 0, r, c, a) for r in range(height) for c in range(width) for a in range(2)]
        assert [tuple(row) for row in index.tolist()] == expected
        # The anchor of row (r, c, a) is centred at (c, r) x stride with size sizes[level][a].
        stride = generator.strides[level]
        centres = (boxes.tensor[:, :2] + boxes.tensor[:, 2:]) / 2
        assert torch.equal(centres[:, 0], index[:, 3].float() * stride)
        assert torch.equal(centres[:, 1], index[:, 2].float() * stride)
        sizes = boxes.tensor[:, 2] - boxes.tensor[:, 0]
        assert torch.equal(sizes, torch.tensor([[8.0, 12.0], [16.0, 24.0]][level])[index[:, 4]])


@pytest.mark.parametrize("bipyramid_on", [True, False])
def test_head_shapes_for_six_levels(bipyramid_on):
    torch.manual_seed(0)
    head = TensorMaskHead(
        input_shape=[ShapeSpec(channels=8)] * 6,
        num_classes=3,
        num_anchors=2,
        mask_sizes=[3, 5],
        num_convs=2,
        cls_channels=8,
        bbox_channels=4,
        mask_channels=4,
        bipyramid_on=bipyramid_on,
    )
    sizes = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    features = [torch.randn(2, 8, h, w) for h, w in sizes]
    logits, deltas, masks = head(features)
    assert [tuple(x.shape) for x in logits] == [(2, 6, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in deltas] == [(2, 8, h, w) for h, w in sizes]
    for lvl, (h, w) in enumerate(sizes):
        factor = 2**lvl if bipyramid_on else 1
        assert [tuple(m.shape) for m in masks[lvl]] == [(2, (s * factor) ** 2, h, w) for s in (3, 5)]
    # Detectron2's initialisation: prior 0.01 on the classes.
    assert torch.allclose(logits[0].sigmoid().mean(), torch.tensor(0.01), atol=2e-3)


def test_head_rejects_inconsistent_arguments():
    with pytest.raises(ValueError, match="one size per anchor"):
        TensorMaskHead(input_shape=[ShapeSpec(channels=8)], num_classes=3, num_anchors=2, mask_sizes=[3])
    with pytest.raises(ValueError, match="needs `aligned_on`"):
        TensorMaskHead(
            input_shape=[ShapeSpec(channels=8)], num_classes=3, num_anchors=1, mask_sizes=[3], aligned_on=False
        )


def _reference_keys() -> dict[str, tuple[int, ...]]:
    table = {}
    for line in KEYS_FILE.read_text().splitlines():
        key, shape = line.split("\t")
        table[key] = tuple(int(v) for v in shape.strip("[]").split(",") if v.strip())
    return table


def test_state_dict_matches_detectron2_keys():
    cfg = LazyConfig.load(str(PROJECT / "configs" / "tensormask_R_50_FPN_1x.py"))
    model = instantiate(cfg.model)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    reference = _reference_keys()
    assert len(reference) == 319
    assert ours == reference


def test_detectron2_pkl_loads_as_it_is(tiny_tensormask, tmp_path):
    source = tiny_tensormask()
    for p in source.parameters():
        p.data.normal_()
    blob = {"model": {k: v.numpy() for k, v in source.state_dict().items()}, "__author__": "Detectron2 Model Zoo"}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps(blob))
    target = tiny_tensormask()
    DetectionCheckpointer(target).load(str(path))
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), k


def _image_with_boxes(boxes: list[list[float]], classes: list[int], height: int = 64, width: int = 96):
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, int(y0) : int(y1), int(x0) : int(x1)] = True
    instances.gt_masks = BitMasks(masks)
    image = torch.randint(0, 255, (3, height, width)).float()
    return {"image": image, "instances": instances, "height": height, "width": width}


def test_train_step_with_and_without_objects(tiny_tensormask):
    model = tiny_tensormask()
    model.train()
    batch = [
        _image_with_boxes([[26.0, 26.0, 38.0, 38.0], [50.0, 10.0, 90.0, 50.0]], [0, 2]),
        _image_with_boxes([], []),  # an image without objects
    ]
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] > 0 and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.head.mask_pred_04.weight.grad.abs().sum() > 0
    # The ground truth: the small box gets p2 anchors, the larger one p3's or p4's.
    features = [torch.zeros(1, 1, 64 // s, 96 // s) for s in (4, 8, 16, 32, 64, 128)]
    anchors, lengths, indexes = model.anchor_generator(features)
    targets = model.get_ground_truth(anchors, lengths, indexes, [batch[0]["instances"]])
    assert targets["num_foreground"] > 0
    assert targets["masks"][0][0] is not None and targets["masks"][0][0].shape[1:] == (4, 4)


def test_train_step_without_any_object(tiny_tensormask):
    model = tiny_tensormask()
    model.train()
    losses = model([_image_with_boxes([], []), _image_with_boxes([], [])])
    assert losses["loss_box_reg"].item() == 0 and losses["loss_mask"].item() == 0
    assert losses["loss_cls"] > 0
    sum(losses.values()).backward()


def test_inference_pastes_masks(tiny_tensormask):
    model = tiny_tensormask(score_threshold=0.0, topk_candidates=50, max_detections_per_image=7)
    model.eval()
    batch = [_image_with_boxes([], [], 64, 96), _image_with_boxes([], [], 70, 50)]
    batch[1]["height"], batch[1]["width"] = 140, 100  # results at twice the input size
    with torch.no_grad():
        outputs = model([{k: v for k, v in x.items() if k != "instances"} for x in batch])
    assert len(outputs) == 2
    for output, (h, w) in zip(outputs, [(64, 96), (140, 100)]):
        result = output["instances"]
        assert result.image_size == (h, w)
        assert 0 < len(result) <= 7
        assert result.pred_masks.shape == (len(result), h, w) and result.pred_masks.dtype == torch.bool
        assert result.scores.shape == (len(result),) and result.pred_classes.max() < 3
        assert (result.pred_boxes.tensor[:, 2] <= w).all() and (result.pred_boxes.tensor[:, 3] <= h).all()


def test_inference_without_masks(tiny_tensormask):
    model = tiny_tensormask(mask_on=False, bipyramid_on=False, score_threshold=0.0, topk_candidates=20)
    model.eval()
    with torch.no_grad():
        (output,) = model([{"image": torch.zeros(3, 64, 64)}])
    assert not output["instances"].has("pred_masks") and len(output["instances"]) > 0
