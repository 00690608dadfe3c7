import math

import pytest
import torch

from libdet.modeling.anchor_generator import DefaultAnchorGenerator, RotatedAnchorGenerator
from libdet.structures import Boxes, RotatedBoxes


def _features(*hw):
    return [torch.zeros(1, 2, h, w) for h, w in hw]


def test_cell_anchors_exact_values_and_order():
    # For each size, for each aspect ratio (h / w); area size**2.
    gen = DefaultAnchorGenerator(sizes=[[8, 16]], aspect_ratios=[[0.25, 1.0, 4.0]], strides=[4])
    expected = torch.tensor(
        [
            [-8.0, -2.0, 8.0, 2.0],  # size 8, ratio 0.25: w 16, h 4
            [-4.0, -4.0, 4.0, 4.0],  # size 8, ratio 1
            [-2.0, -8.0, 2.0, 8.0],  # size 8, ratio 4: w 4, h 16
            [-16.0, -4.0, 16.0, 4.0],
            [-8.0, -8.0, 8.0, 8.0],
            [-4.0, -16.0, 4.0, 16.0],
        ]
    )
    (cell,) = list(gen.cell_anchors)
    assert torch.allclose(cell, expected)
    assert gen.num_anchors == [6] and gen.num_cell_anchors == [6]
    assert gen.box_dim == 4


def test_two_level_grid_anchors_known_coordinates():
    gen = DefaultAnchorGenerator(sizes=[[8], [16]], aspect_ratios=[[1.0, 4.0]], strides=[4, 8], offset=0.5)
    anchors = gen(_features((2, 3), (1, 2)))
    assert all(isinstance(a, Boxes) for a in anchors)
    assert [len(a) for a in anchors] == [2 * 3 * 2, 1 * 2 * 2]

    # Level 0 (stride 4): centres (x + 0.5) * 4, rows first, then columns, then cell anchors.
    lvl0 = anchors[0].tensor
    assert torch.allclose(lvl0[0], torch.tensor([-2.0, -2.0, 6.0, 6.0]))  # (y=0, x=0), 8x8 at (2, 2)
    assert torch.allclose(lvl0[1], torch.tensor([0.0, -6.0, 4.0, 10.0]))  # (0, 0), 4x16
    assert torch.allclose(lvl0[2], torch.tensor([2.0, -2.0, 10.0, 6.0]))  # (y=0, x=1): centre (6, 2)
    assert torch.allclose(lvl0[6], torch.tensor([-2.0, 2.0, 6.0, 10.0]))  # (y=1, x=0): centre (2, 6)
    assert torch.allclose(lvl0[11], torch.tensor([8.0, -2.0, 12.0, 14.0]))  # (1, 2), 4x16 at (10, 6)
    expected = []
    for y in range(2):
        for x in range(3):
            cx, cy = (x + 0.5) * 4, (y + 0.5) * 4
            for w, h in ((8, 8), (4, 16)):
                expected.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert torch.equal(lvl0, torch.tensor(expected))

    # Level 1 (stride 8, size 16): centres (4, 4) and (12, 4).
    expected1 = torch.tensor(
        [[-4.0, -4.0, 12.0, 12.0], [0.0, -12.0, 8.0, 20.0], [4.0, -4.0, 20.0, 12.0], [8.0, -12.0, 16.0, 20.0]]
    )
    assert torch.equal(anchors[1].tensor, expected1)


def test_offset_zero_puts_centres_on_grid_corners():
    gen = DefaultAnchorGenerator(sizes=[[2]], aspect_ratios=[[1.0]], strides=[16], offset=0.0)
    (a,) = gen(_features((2, 2)))
    assert torch.equal(
        a.tensor,
        torch.tensor(
            [[-1.0, -1.0, 1.0, 1.0], [15.0, -1.0, 17.0, 1.0], [-1.0, 15.0, 1.0, 17.0], [15.0, 15.0, 17.0, 17.0]]
        ),
    )


def test_broadcast_of_single_lists():
    gen = DefaultAnchorGenerator(sizes=[32, 64], aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32])
    assert gen.num_anchors == [6, 6, 6]
    gen = DefaultAnchorGenerator(sizes=[[32], [64], [128]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16, 32])
    assert gen.num_anchors == [3, 3, 3]
    cells = list(gen.cell_anchors)
    assert torch.allclose(cells[2], cells[0] * 4)


def test_anchors_are_not_in_state_dict_but_follow_dtype_and_device():
    gen = DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4, 8])
    assert len(gen.state_dict()) == 0
    gen = gen.to(torch.float64)
    assert all(c.dtype == torch.float64 for c in gen.cell_anchors)
    assert len(list(gen.buffers())) == 2


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="sizes"):
        DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[1.0]], strides=[4, 8, 16])
    with pytest.raises(ValueError, match="offset"):
        DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4], offset=1.0)
    gen = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4, 8])
    with pytest.raises(ValueError, match="feature maps"):
        gen(_features((2, 2)))


def test_rotated_anchor_generator_order_and_values():
    gen = RotatedAnchorGenerator(sizes=[[8]], aspect_ratios=[[1.0, 4.0]], strides=[4], angles=[[0.0, 45.0]])
    assert gen.box_dim == 5 and gen.num_anchors == [4]
    (a,) = gen(_features((1, 2)))
    assert isinstance(a, RotatedBoxes)
    expected = torch.tensor(
        [
            [2.0, 2.0, 8.0, 8.0, 0.0],
            [2.0, 2.0, 8.0, 8.0, 45.0],
            [2.0, 2.0, 4.0, 16.0, 0.0],
            [2.0, 2.0, 4.0, 16.0, 45.0],
            [6.0, 2.0, 8.0, 8.0, 0.0],
            [6.0, 2.0, 8.0, 8.0, 45.0],
            [6.0, 2.0, 4.0, 16.0, 0.0],
            [6.0, 2.0, 4.0, 16.0, 45.0],
        ]
    )
    assert torch.allclose(a.tensor, expected)
    assert math.isclose(float(a.tensor[:, 2].mul(a.tensor[:, 3]).max()), 64.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_anchors_follow_the_module_device():
    gen = DefaultAnchorGenerator(sizes=[[8], [16]], aspect_ratios=[[1.0, 4.0]], strides=[4, 8])
    cpu = gen(_features((2, 3), (1, 2)))
    cuda = gen.to("cuda")([f.cuda() for f in _features((2, 3), (1, 2))])
    assert all(a.tensor.device.type == "cuda" for a in cuda)
    assert all(torch.equal(a.tensor.cpu(), b.tensor) for a, b in zip(cuda, cpu))
