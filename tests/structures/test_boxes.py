import math

import numpy as np
import pytest
import torch

from libdet.structures.boxes import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)

R2 = math.sqrt(2)


@pytest.mark.parametrize(
    "box, from_mode, to_mode, expected",
    [
        ([1, 2, 3, 4], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS, [1, 2, 4, 6]),
        ([1, 2, 4, 6], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS, [1, 2, 3, 4]),
        ([1.0, 2.0, 4.0, 2.0], BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS, [3.0, 3.0, 4.0, 2.0, 0.0]),
        ([1.0, 2.0, 5.0, 4.0], BoxMode.XYXY_ABS, BoxMode.XYWHA_ABS, [3.0, 3.0, 4.0, 2.0, 0.0]),
        # A 4x2 box turned by 90 degrees is 2 wide and 4 tall.
        ([10.0, 20.0, 4.0, 2.0, 90.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS, [9.0, 18.0, 11.0, 22.0]),
        ([10.0, 20.0, 4.0, 2.0, -90.0], BoxMode.XYWHA_ABS, BoxMode.XYWH_ABS, [9.0, 18.0, 2.0, 4.0]),
        ([10.0, 20.0, 4.0, 2.0, 0.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS, [8.0, 19.0, 12.0, 21.0]),
        # A 2x2 square turned by 45 degrees spans its diagonal, 2*sqrt(2), along both axes.
        ([0.0, 0.0, 2.0, 2.0, 45.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS, [-R2, -R2, R2, R2]),
    ],
)
def test_convert_values_for_every_input_type(box, from_mode, to_mode, expected):
    out_list = BoxMode.convert(box, from_mode, to_mode)
    assert isinstance(out_list, list)
    assert out_list == pytest.approx(expected, abs=1e-6)

    out_tuple = BoxMode.convert(tuple(box), from_mode, to_mode)
    assert isinstance(out_tuple, tuple)
    assert list(out_tuple) == pytest.approx(expected, abs=1e-6)

    arr = np.array([box, box], dtype=np.float64)
    out_arr = BoxMode.convert(arr, from_mode, to_mode)
    assert isinstance(out_arr, np.ndarray) and out_arr.dtype == np.float64
    np.testing.assert_allclose(out_arr, np.array([expected, expected]), atol=1e-6)
    np.testing.assert_array_equal(arr, np.array([box, box], dtype=np.float64))  # input untouched

    tensor = torch.tensor([box], dtype=torch.float32)
    before = tensor.clone()
    out_tensor = BoxMode.convert(tensor, from_mode, to_mode)
    assert isinstance(out_tensor, torch.Tensor) and out_tensor.dtype == torch.float32
    torch.testing.assert_close(out_tensor, torch.tensor([expected], dtype=torch.float32), atol=1e-5, rtol=0)
    assert torch.equal(tensor, before)

    out_single = BoxMode.convert(torch.tensor(box, dtype=torch.float64), from_mode, to_mode)
    assert out_single.shape == (len(expected),)
    torch.testing.assert_close(out_single, torch.tensor(expected, dtype=torch.float64))


def test_convert_round_trip_and_same_mode():
    boxes = torch.tensor([[3.0, 4.0, 10.0, 20.0], [0.0, 0.0, 1.5, 2.5]])
    xywh = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    torch.testing.assert_close(xywh, torch.tensor([[3.0, 4.0, 7.0, 16.0], [0.0, 0.0, 1.5, 2.5]]))
    torch.testing.assert_close(BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS), boxes)
    rotated = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWHA_ABS)
    torch.testing.assert_close(BoxMode.convert(rotated, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS), boxes)
    assert BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYXY_ABS) is boxes
    # Integer modes are accepted, as the enum is an IntEnum.
    assert BoxMode.convert([1, 2, 3, 4], 1, 0) == [1, 2, 4, 6]


def test_convert_empty():
    out = BoxMode.convert(torch.zeros(0, 5), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    assert out.shape == (0, 4)
    out = BoxMode.convert(np.zeros((0, 4), dtype=np.float32), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert out.shape == (0, 4) and out.dtype == np.float32


@pytest.mark.parametrize("mode", [BoxMode.XYXY_REL, BoxMode.XYWH_REL])
def test_convert_relative_modes_raise(mode):
    with pytest.raises(NotImplementedError, match="relative"):
        BoxMode.convert([0.1, 0.1, 0.5, 0.5], mode, BoxMode.XYXY_ABS)
    with pytest.raises(NotImplementedError, match="relative"):
        BoxMode.convert([1, 1, 5, 5], BoxMode.XYXY_ABS, mode)


def test_convert_bad_input():
    with pytest.raises(ValueError, match="4 or 5"):
        BoxMode.convert([1, 2, 3], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    with pytest.raises(ValueError, match="XYWHA_ABS have 5"):
        BoxMode.convert(torch.zeros(2, 4), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    with pytest.raises(TypeError, match="`box`"):
        BoxMode.convert("0 0 1 1", BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)


def test_boxes_construction():
    assert Boxes([]).tensor.shape == (0, 4)
    assert Boxes(torch.zeros(0)).tensor.shape == (0, 4)
    assert Boxes(np.zeros((0, 4))).tensor.dtype == torch.float32
    b = Boxes([[1, 2, 3, 4]])
    assert b.tensor.dtype == torch.float32 and b.tensor.shape == (1, 4)
    assert Boxes(torch.ones(2, 4, dtype=torch.float64)).tensor.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(N, 4\).*\(2, 5\)"):
        Boxes(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Boxes(torch.zeros(4))


def test_boxes_area_centers_scale():
    b = Boxes([[0.0, 0.0, 2.0, 3.0], [1.0, 2.0, 5.0, 4.0]])
    torch.testing.assert_close(b.area(), torch.tensor([6.0, 8.0]))
    torch.testing.assert_close(b.get_centers(), torch.tensor([[1.0, 1.5], [3.0, 3.0]]))
    b.scale(2.0, 3.0)
    torch.testing.assert_close(b.tensor, torch.tensor([[0.0, 0.0, 4.0, 9.0], [2.0, 6.0, 10.0, 12.0]]))


def test_boxes_clip():
    b = Boxes([[-1.0, -2.0, 5.0, 20.0], [1.0, 1.0, 2.0, 2.0], [30.0, 30.0, 40.0, 40.0]])
    b.clip((10, 4))  # (height, width)
    expected = torch.tensor([[0.0, 0.0, 4.0, 10.0], [1.0, 1.0, 2.0, 2.0], [4.0, 10.0, 4.0, 10.0]])
    torch.testing.assert_close(b.tensor, expected)
    with pytest.raises(ValueError, match="infinite or NaN"):
        Boxes([[0.0, 0.0, float("nan"), 1.0]]).clip((10, 10))


def test_boxes_nonempty():
    b = Boxes([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 2.0, 0.5], [3.0, 3.0, 2.0, 4.0]])
    assert b.nonempty().tolist() == [True, False, True, False]
    assert b.nonempty(threshold=0.6).tolist() == [True, False, False, False]


def test_boxes_inside_box():
    b = Boxes([[0.0, 0.0, 19.0, 9.0], [-1.0, 0.0, 5.0, 5.0], [0.0, 0.0, 20.0, 5.0], [-2.0, 0.0, 5.0, 5.0]])
    assert b.inside_box((10, 20)).tolist() == [True, False, False, False]
    assert b.inside_box((10, 20), boundary_threshold=1).tolist() == [True, True, True, False]


def test_boxes_indexing():
    t = torch.arange(16, dtype=torch.float32).view(4, 4)
    b = Boxes(t)
    assert b[1].tensor.shape == (1, 4) and torch.equal(b[1].tensor[0], t[1])
    assert torch.equal(b[-1].tensor[0], t[3])
    assert torch.equal(b[1:3].tensor, t[1:3])
    assert torch.equal(b[torch.tensor([True, False, False, True])].tensor, t[[0, 3]])
    assert torch.equal(b[torch.tensor([2, 0])].tensor, t[[2, 0]])
    assert torch.equal(b[[3, 3]].tensor, t[[3, 3]])
    assert b[torch.zeros(4, dtype=torch.bool)].tensor.shape == (0, 4)
    for item in (b[0], b[1:3], b[torch.tensor([0])]):
        assert isinstance(item, Boxes)
    with pytest.raises(IndexError):
        b[0, 1]


def test_boxes_cat_clone_to_iter_repr():
    b1 = Boxes([[0.0, 0.0, 1.0, 1.0]])
    b2 = Boxes([[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 3.0, 3.0]])
    cat = Boxes.cat([b1, b2, Boxes([])])
    assert isinstance(cat, Boxes) and len(cat) == 3
    torch.testing.assert_close(cat.tensor[1:], b2.tensor)
    assert Boxes.cat([]).tensor.shape == (0, 4)
    with pytest.raises(TypeError, match=r"boxes_list\[1\]"):
        Boxes.cat([b1, torch.zeros(1, 4)])

    clone = b2.clone()
    clone.tensor[0, 0] = 100.0
    assert b2.tensor[0, 0] == 1.0

    moved = b2.to("cpu")
    assert isinstance(moved, Boxes) and moved.device == torch.device("cpu")
    assert torch.equal(moved.tensor, b2.tensor)
    rows = list(b2)
    assert len(rows) == 2 and torch.equal(rows[1], torch.tensor([2.0, 2.0, 3.0, 3.0]))
    assert repr(b1).startswith("Boxes(tensor(")


def test_boxes_empty():
    b = Boxes([])
    assert len(b) == 0
    assert b.area().shape == (0,)
    assert b.nonempty().shape == (0,)
    assert b.get_centers().shape == (0, 2)
    b.clip((10, 10))
    assert b.tensor.shape == (0, 4)
    assert pairwise_iou(b, Boxes([[0.0, 0.0, 1.0, 1.0]])).shape == (0, 1)
    assert matched_pairwise_iou(b, Boxes([])).shape == (0,)


BOXES1 = Boxes([[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 14.0]])
BOXES2 = Boxes(
    [[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [11.0, 11.0, 12.0, 12.0]]
)


def test_pairwise_intersection():
    expected = torch.tensor([[1.0, 4.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(pairwise_intersection(BOXES1, BOXES2), expected)


def test_pairwise_iou():
    # [0,2]^2 vs [1,3]^2: 1 / (4 + 4 - 1); identical; touching at a corner; contained quarter.
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 1 / 4, 0.0], [0.0, 0.0, 0.0, 0.0, 1 / 8]])
    torch.testing.assert_close(pairwise_iou(BOXES1, BOXES2), expected)
    # Degenerate (zero-area) boxes give 0, not NaN.
    degenerate = Boxes([[5.0, 5.0, 5.0, 5.0]])
    assert pairwise_iou(degenerate, degenerate).tolist() == [[0.0]]


def test_pairwise_ioa():
    # Intersection divided by the area of the second argument's boxes.
    expected = torch.tensor([[1 / 4, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(pairwise_ioa(BOXES1, BOXES2), expected)


def test_pairwise_point_box_distance():
    points = torch.tensor([[1.0, 1.0], [5.0, 0.0]])
    boxes = Boxes([[0.0, 0.0, 2.0, 4.0], [4.0, -1.0, 6.0, 1.0]])
    out = pairwise_point_box_distance(points, boxes)
    assert out.shape == (2, 2, 4)
    expected = torch.tensor(
        [
            [[1.0, 1.0, 1.0, 3.0], [-3.0, 2.0, 5.0, 0.0]],
            [[5.0, 0.0, -3.0, 4.0], [1.0, 1.0, 1.0, 1.0]],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_matched_pairwise_iou():
    a = Boxes([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 4.0, 4.0]])
    b = Boxes([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 4.0]])
    torch.testing.assert_close(matched_pairwise_iou(a, b), torch.tensor([1 / 7, 0.0, 0.5]))
    with pytest.raises(ValueError, match="same number of boxes, got 3 and 2"):
        matched_pairwise_iou(a, b[:2])


def test_subclass_keeps_its_class_when_selected_cloned_or_moved():
    class MyBoxes(Boxes):
        pass

    boxes = MyBoxes(torch.rand(3, 4))
    for derived in (boxes[torch.tensor([0, 2])], boxes[1], boxes.clone(), boxes.to("cpu")):
        assert type(derived) is MyBoxes
