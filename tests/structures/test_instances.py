import copy
import pickle

import pytest
import torch

from libdet.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks, RotatedBoxes


def _make(n: int = 3, offset: float = 0.0) -> Instances:
    boxes = Boxes(torch.arange(n * 4, dtype=torch.float32).view(n, 4) + offset)
    return Instances(
        (20, 30),
        gt_boxes=boxes,
        scores=torch.arange(n, dtype=torch.float32) + offset,
        names=[f"obj{i + int(offset)}" for i in range(n)],
    )


def test_fields_set_get_has_remove():
    inst = Instances((20, 30))
    assert inst.image_size == (20, 30)
    assert not inst.has("scores")
    inst.scores = torch.tensor([0.5, 0.7])
    inst.set("classes", torch.tensor([1, 2]))
    assert inst.has("scores") and inst.has("classes")
    assert torch.equal(inst.get("classes"), torch.tensor([1, 2]))
    assert torch.equal(inst.scores, torch.tensor([0.5, 0.7]))
    assert list(inst.get_fields()) == ["scores", "classes"]
    assert len(inst) == 2
    inst.remove("scores")
    assert not inst.has("scores")
    with pytest.raises(AttributeError, match="Cannot find field 'scores'"):
        _ = inst.scores
    with pytest.raises(KeyError):
        inst.get("scores")
    # Underscore names are plain attributes, not fields.
    inst._private = 1
    assert "_private" not in inst.get_fields()


def test_length_mismatch_error_names_field_and_lengths():
    inst = Instances((20, 30), scores=torch.zeros(3))
    with pytest.raises(ValueError) as info:
        inst.gt_classes = torch.zeros(2, dtype=torch.long)
    message = str(info.value)
    assert "'gt_classes'" in message
    assert "length 2" in message and "length 3" in message
    assert "'scores'" in message
    with pytest.raises(ValueError, match="'gt_boxes' has length 1"):
        Instances((20, 30), scores=torch.zeros(3), gt_boxes=Boxes([[0.0, 0.0, 1.0, 1.0]]))
    assert not inst.has("gt_classes")


def test_empty_instances_len_and_iter_raise():
    inst = Instances((20, 30))
    with pytest.raises(NotImplementedError, match="Empty Instances"):
        len(inst)
    with pytest.raises(NotImplementedError, match="not iterable"):
        iter(_make())
    assert "num_instances=0" in repr(inst)


def test_zero_length_instances():
    inst = Instances((20, 30), gt_boxes=Boxes([]), scores=torch.zeros(0))
    assert len(inst) == 0
    assert len(inst[torch.zeros(0, dtype=torch.bool)]) == 0
    cat = Instances.cat([inst, _make(2)])
    assert len(cat) == 2 and isinstance(cat.gt_boxes, Boxes)


def test_getitem():
    inst = _make(3)
    one = inst[1]
    assert isinstance(one, Instances) and len(one) == 1
    assert torch.equal(one.gt_boxes.tensor, torch.tensor([[4.0, 5.0, 6.0, 7.0]]))
    assert one.names == ["obj1"]
    last = inst[-1]
    assert last.scores.tolist() == [2.0] and last.names == ["obj2"]
    with pytest.raises(IndexError, match="out of range"):
        inst[3]
    with pytest.raises(IndexError, match="out of range"):
        inst[-4]
    assert inst[1:].names == ["obj1", "obj2"]

    tensor_only = Instances((20, 30), gt_boxes=inst.gt_boxes, scores=inst.scores)
    masked = tensor_only[tensor_only.scores > 0.5]
    assert masked.scores.tolist() == [1.0, 2.0]
    assert torch.equal(masked.gt_boxes.tensor, inst.gt_boxes.tensor[1:])
    picked = tensor_only[torch.tensor([2, 0])]
    assert picked.scores.tolist() == [2.0, 0.0]
    assert picked.image_size == (20, 30)


def test_to_moves_fields_that_support_it():
    inst = _make(2)
    moved = inst.to("cpu")
    assert moved is not inst and moved.image_size == inst.image_size
    assert isinstance(moved.gt_boxes, Boxes)
    assert moved.names == inst.names  # lists have no .to and pass through
    as_double = Instances((1, 1), scores=torch.zeros(2)).to(torch.float64)
    assert as_double.scores.dtype == torch.float64


def test_cat():
    a, b = _make(2), _make(3, offset=100.0)
    cat = Instances.cat([a, b])
    assert len(cat) == 5 and cat.image_size == (20, 30)
    assert cat.scores.tolist() == [0.0, 1.0, 100.0, 101.0, 102.0]
    assert cat.names == ["obj0", "obj1", "obj100", "obj101", "obj102"]
    assert isinstance(cat.gt_boxes, Boxes)
    assert torch.equal(cat.gt_boxes.tensor[2:], b.gt_boxes.tensor)
    assert Instances.cat([a]) is a

    with pytest.raises(ValueError, match="empty"):
        Instances.cat([])
    other_size = Instances((21, 30), scores=torch.zeros(1))
    with pytest.raises(ValueError, match=r"instance_lists\[1\].*\(21, 30\)"):
        Instances.cat([Instances((20, 30), scores=torch.zeros(1)), other_size])
    weird = Instances((20, 30), field=("a",))
    with pytest.raises(ValueError, match="'field'.*cannot be concatenated"):
        Instances.cat([weird, weird])
    with pytest.raises(TypeError, match=r"instance_lists\[1\]"):
        Instances.cat([a, {"scores": torch.zeros(1)}])


def test_repr_copy_pickle():
    inst = _make(2)
    text = repr(inst)
    assert "num_instances=2" in text and "image_height=20" in text and "image_width=30" in text
    assert "scores: tensor" in text and "gt_boxes: Boxes" in text
    for clone in (copy.deepcopy(inst), pickle.loads(pickle.dumps(inst))):
        assert clone.names == inst.names
        assert torch.equal(clone.scores, inst.scores)


def _all_structures(n: int, offset: float) -> Instances:
    masks = torch.zeros(n, 6, 6, dtype=torch.bool)
    for i in range(n):
        masks[i, i, i] = True
    polygons = [[[offset + i, 0.0, offset + i + 1.0, 0.0, offset + i, 1.0]] for i in range(n)]
    return Instances(
        (6, 6),
        gt_boxes=Boxes(torch.arange(n * 4, dtype=torch.float32).view(n, 4) + offset),
        gt_rotated=RotatedBoxes(torch.ones(n, 5) * offset),
        gt_bitmasks=BitMasks(masks),
        gt_polygons=PolygonMasks(polygons),
        gt_keypoints=Keypoints(torch.ones(n, 2, 3) * offset),
        gt_classes=torch.arange(n) + int(offset),
    )


def _structure_types():
    return {
        "gt_boxes": Boxes,
        "gt_rotated": RotatedBoxes,
        "gt_bitmasks": BitMasks,
        "gt_polygons": PolygonMasks,
        "gt_keypoints": Keypoints,
        "gt_classes": torch.Tensor,
    }


def test_every_structure_as_a_field():
    a, b = _all_structures(2, 0.0), _all_structures(3, 10.0)
    cat = Instances.cat([a, b])
    assert len(cat) == 5
    for name, cls in _structure_types().items():
        assert isinstance(cat.get(name), cls) and len(cat.get(name)) == 5

    picked = cat[torch.tensor([False, True, True, False, False])]
    assert picked.gt_classes.tolist() == [1, 10]
    assert picked.gt_polygons.polygons[1][0][0] == 10.0
    assert picked.gt_rotated.tensor[:, 0].tolist() == [0.0, 10.0]
    assert picked.gt_keypoints.tensor[:, 0, 0].tolist() == [0.0, 10.0]
    assert picked.gt_bitmasks.tensor[0, 1, 1] and picked.gt_bitmasks.tensor[1, 0, 0]
    one = cat[4]
    assert len(one) == 1 and one.gt_classes.tolist() == [12]
    assert torch.equal(one.gt_boxes.tensor, b.gt_boxes.tensor[2:])

    moved = cat.to("cpu")
    for name, cls in _structure_types().items():
        assert isinstance(moved.get(name), cls)
    assert torch.equal(moved.gt_bitmasks.tensor, cat.gt_bitmasks.tensor)

    empty = cat[torch.zeros(5, dtype=torch.bool)]
    assert len(empty) == 0
    for name, cls in _structure_types().items():
        assert isinstance(empty.get(name), cls) and len(empty.get(name)) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_structure_moves_to_cuda_and_back():
    inst = _all_structures(3, 1.0)
    on_gpu = inst.to("cuda")
    for name in ("gt_boxes", "gt_rotated", "gt_bitmasks", "gt_keypoints", "gt_classes"):
        assert on_gpu.get(name).device.type == "cuda"
    assert on_gpu.gt_polygons.device.type == "cpu"  # polygons stay numpy arrays
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0]] * 3)
    crops = on_gpu.gt_bitmasks.crop_and_resize(boxes, 3)
    assert crops.device.type == "cuda"
    assert torch.equal(crops.cpu(), inst.gt_bitmasks.crop_and_resize(boxes, 3))
    back = on_gpu.to("cpu")
    assert torch.equal(back.gt_classes, inst.gt_classes)
    for name in ("gt_boxes", "gt_rotated", "gt_bitmasks", "gt_keypoints"):
        assert torch.equal(back.get(name).tensor, inst.get(name).tensor)
