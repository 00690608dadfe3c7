import math

import pytest
import torch

from libdet.structures.rotated_boxes import RotatedBoxes, pairwise_iou, pairwise_iou_rotated


def test_construction():
    assert RotatedBoxes([]).tensor.shape == (0, 5)
    assert RotatedBoxes(torch.zeros(0)).tensor.shape == (0, 5)
    b = RotatedBoxes([[1, 2, 3, 4, 5]])
    assert b.tensor.dtype == torch.float32 and b.tensor.shape == (1, 5)
    assert RotatedBoxes(torch.ones(3, 5, dtype=torch.float64)).tensor.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(N, 5\).*\(2, 4\)"):
        RotatedBoxes(torch.zeros(2, 4))


def test_area_and_centers():
    b = RotatedBoxes([[1.0, 2.0, 4.0, 2.0, 30.0], [0.0, 0.0, 3.0, 5.0, -90.0]])
    torch.testing.assert_close(b.area(), torch.tensor([8.0, 15.0]))
    torch.testing.assert_close(b.get_centers(), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_normalize_angles():
    b = RotatedBoxes([[0.0, 0.0, 1.0, 1.0, a] for a in (190.0, -180.0, 180.0, 540.0, -190.0, 45.0)])
    b.normalize_angles()
    assert b.tensor[:, 4].tolist() == [-170.0, -180.0, -180.0, -180.0, 170.0, 45.0]


def test_clip_only_nearly_horizontal_boxes():
    b = RotatedBoxes(
        [
            [1.0, 1.0, 4.0, 2.0, 0.5],  # x range [-1, 3] -> [0, 3]
            [1.0, 1.0, 4.0, 2.0, 360.5],  # normalized to 0.5, then clipped the same way
            [1.0, 1.0, 4.0, 2.0, 45.0],  # rotated: left alone
            [9.0, 9.0, 4.0, 4.0, 0.0],  # [7, 11]^2 -> [7, 10]^2
        ]
    )
    b.clip((10, 10))
    expected = torch.tensor(
        [
            [1.5, 1.0, 3.0, 2.0, 0.5],
            [1.5, 1.0, 3.0, 2.0, 0.5],
            [1.0, 1.0, 4.0, 2.0, 45.0],
            [8.5, 8.5, 3.0, 3.0, 0.0],
        ]
    )
    torch.testing.assert_close(b.tensor, expected, atol=1e-4, rtol=0)
    b = RotatedBoxes([[1.0, 1.0, 4.0, 2.0, 5.0]])
    b.clip((10, 10), clip_angle_threshold=10.0)
    torch.testing.assert_close(b.tensor, torch.tensor([[1.5, 1.0, 3.0, 2.0, 5.0]]))


def test_nonempty():
    b = RotatedBoxes([[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 2.0, 0.5, 30.0]])
    assert b.nonempty().tolist() == [True, False, True]
    assert b.nonempty(threshold=0.6).tolist() == [True, False, False]


def test_inside_box_uses_rotated_extent():
    b = RotatedBoxes(
        [
            [5.0, 5.0, 4.0, 2.0, 0.0],  # [3, 7] x [4, 6]
            [5.0, 2.5, 4.0, 2.0, 90.0],  # upright: [4, 6] x [0.5, 4.5]
            [5.0, 1.5, 4.0, 2.0, 90.0],  # upright: [4, 6] x [-0.5, 3.5]
            [5.0, 1.5, 4.0, 2.0, 0.0],  # [3, 7] x [0.5, 2.5]
        ]
    )
    assert b.inside_box((10, 10)).tolist() == [True, True, False, True]
    assert b.inside_box((10, 10), boundary_threshold=1).tolist() == [True, True, True, True]
    assert b.inside_box((10, 6.9)).tolist() == [False, True, False, False]  # x1 = 7 for the flat boxes


def test_scale():
    b = RotatedBoxes([[1.0, 2.0, 4.0, 2.0, 30.0]])
    b.scale(2.0, 2.0)
    torch.testing.assert_close(b.tensor, torch.tensor([[2.0, 4.0, 8.0, 4.0, 30.0]]))

    b = RotatedBoxes([[1.0, 1.0, 4.0, 2.0, 0.0], [0.0, 0.0, 4.0, 2.0, 90.0]])
    b.scale(2.0, 3.0)
    # angle 0: width along x (x2), height along y (x3); angle 90: width along y (x3), height along x (x2).
    expected = torch.tensor([[2.0, 3.0, 8.0, 6.0, 0.0], [0.0, 0.0, 12.0, 4.0, 90.0]])
    torch.testing.assert_close(b.tensor, expected, atol=1e-4, rtol=0)


def test_indexing_cat_clone_to():
    t = torch.arange(15, dtype=torch.float32).view(3, 5)
    b = RotatedBoxes(t)
    assert isinstance(b[0], RotatedBoxes) and b[0].tensor.shape == (1, 5)
    assert torch.equal(b[-1].tensor[0], t[2])
    assert torch.equal(b[1:].tensor, t[1:])
    assert torch.equal(b[torch.tensor([False, True, True])].tensor, t[1:])
    assert torch.equal(b[torch.tensor([2, 0])].tensor, t[[2, 0]])
    with pytest.raises(IndexError):
        b[0, 1]

    cat = RotatedBoxes.cat([b, b[0], RotatedBoxes([])])
    assert len(cat) == 4 and torch.equal(cat.tensor[3], t[0])
    assert RotatedBoxes.cat([]).tensor.shape == (0, 5)
    with pytest.raises(TypeError, match=r"boxes_list\[0\]"):
        RotatedBoxes.cat([t])

    clone = b.clone()
    clone.tensor[0, 0] = -1.0
    assert b.tensor[0, 0] == 0.0
    moved = b.to(torch.device("cpu"))
    assert isinstance(moved, RotatedBoxes) and moved.device.type == "cpu"
    assert len(list(b)) == 3
    assert repr(b).startswith("RotatedBoxes(tensor(")


def test_pairwise_iou_rotated_is_the_module_pairwise_iou():
    assert pairwise_iou_rotated is pairwise_iou
    import libdet.structures as structures

    assert structures.pairwise_iou_rotated is pairwise_iou


def test_pairwise_iou_rotated_hand_values():
    boxes1 = RotatedBoxes(
        [
            [0.0, 0.0, 4.0, 2.0, 0.0],
            [0.0, 0.0, 2.0, 2.0, 0.0],
        ]
    )
    boxes2 = RotatedBoxes(
        [
            [0.0, 0.0, 4.0, 2.0, 0.0],  # identical to boxes1[0]
            [0.0, 0.0, 2.0, 4.0, 90.0],  # same pixels as boxes1[0]
            [1.0, 0.0, 2.0, 2.0, 0.0],  # boxes1[1] shifted by 1 along x: 2 / (4 + 4 - 2)
            [0.0, 0.0, 2.0, 2.0, 45.0],  # octagon of area 8(sqrt(2) - 1) with boxes1[1]: IoU 1/sqrt(2)
            [10.0, 10.0, 2.0, 2.0, 30.0],  # disjoint
        ]
    )
    iou = pairwise_iou_rotated(boxes1, boxes2)
    assert iou.shape == (2, 5)
    r2 = math.sqrt(2)
    expected = torch.tensor(
        [
            # boxes1[0] is [-2, 2] x [-1, 1] (area 8). The 2x2 square [0, 2] x [-1, 1] covers half of it.
            # The 45-degree square is the diamond |x| + |y| <= sqrt(2) (area 4); the box cuts off its two tips
            # beyond |y| = 1, triangles of area (sqrt(2) - 1)^2 each: intersection 4 sqrt(2) - 2.
            [1.0, 1.0, 0.5, (4 * r2 - 2) / (14 - 4 * r2), 0.0],
            # boxes1[1] is [-1, 1]^2, inside the 4x2 box: 4 / 8.
            [0.5, 0.5, 1 / 3, 1 / r2, 0.0],
        ]
    )
    torch.testing.assert_close(iou.float().cpu(), expected, atol=1e-4, rtol=0)
    assert pairwise_iou_rotated(RotatedBoxes([]), boxes2).shape == (0, 5)


def test_rotated_boxes_share_the_boxes_container_behaviour():
    from libdet.structures import Boxes

    boxes = RotatedBoxes([[5.0, 5.0, 2.0, 4.0, 30.0], [1.0, 1.0, 1.0, 1.0, -90.0]])
    assert isinstance(boxes, Boxes)  # as in detectron2: code that accepts Boxes accepts these
    assert type(boxes[0]) is RotatedBoxes and boxes[0].tensor.shape == (1, 5)
    assert type(boxes.clone()) is RotatedBoxes and repr(boxes).startswith("RotatedBoxes(")
    merged = RotatedBoxes.cat([boxes, boxes[1:]])
    assert type(merged) is RotatedBoxes and len(merged) == 3
    with pytest.raises(TypeError, match="expected RotatedBoxes"):
        RotatedBoxes.cat([boxes, Boxes([[0.0, 0.0, 1.0, 1.0]])])
    with pytest.raises(ValueError, match=r"RotatedBoxes: `tensor` must have shape \(N, 5\)"):
        RotatedBoxes([[0.0, 0.0, 1.0, 1.0]])


def test_axis_aligned_functions_refuse_rotated_boxes():
    from libdet.structures import Boxes, pairwise_ioa, pairwise_iou, pairwise_point_box_distance
    from libdet.structures.boxes import matched_pairwise_iou

    rotated = RotatedBoxes([[5.0, 5.0, 2.0, 4.0, 30.0]])
    aligned = Boxes([[0.0, 0.0, 4.0, 4.0]])
    for call in (
        lambda: pairwise_iou(aligned, rotated),
        lambda: pairwise_ioa(rotated, aligned),
        lambda: matched_pairwise_iou(rotated, rotated),
        lambda: pairwise_point_box_distance(torch.zeros(1, 2), rotated),
    ):
        with pytest.raises(TypeError, match="RotatedBoxes.*use pairwise_iou_rotated"):
            call()
