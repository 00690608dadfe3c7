import pytest
import torch
from torchvision.ops import roi_align, roi_pool

from libdet.layers import roi_align_rotated
from libdet.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from libdet.structures import Boxes, RotatedBoxes


def _square(side, x0=0.0):
    return [x0, 0.0, x0 + side, side]


def test_level_assignment_table():
    # floor(4 + log2(sqrt(area) / 224 + 1e-8)) clamped to [2, 5], minus 2.
    table = {16: 0, 56: 0, 111: 0, 112: 1, 223: 1, 224: 2, 447: 2, 448: 3, 2000: 3}
    boxes = Boxes(torch.tensor([_square(s) for s in table]))
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.dtype == torch.int64
    assert levels.tolist() == list(table.values())
    # Only the area matters: 112 x 448 has sqrt(area) 224.
    assert assign_boxes_to_levels([Boxes(torch.tensor([[0.0, 0.0, 112.0, 448.0]]))], 2, 5, 224, 4).tolist() == [2]
    # Boxes of several images are concatenated in order; other canonical settings.
    two = assign_boxes_to_levels([Boxes(torch.tensor([_square(32)])), Boxes(torch.tensor([_square(64)]))], 3, 7, 32, 3)
    assert two.tolist() == [0, 1]


def test_convert_boxes_to_pooler_format():
    b1 = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    b2 = Boxes(torch.zeros(0, 4))
    b3 = Boxes(torch.tensor([[9.0, 10.0, 11.0, 12.0]]))
    out = convert_boxes_to_pooler_format([b1, b2, b3])
    assert torch.equal(
        out, torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 6.0, 7.0, 8.0], [2.0, 9.0, 10.0, 11.0, 12.0]])
    )


def _pyramid(n=2, c=3, size=128, strides=(4, 8, 16, 32)):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, c, size // s, size // s, generator=g) for s in strides]


def _boxes():
    return [
        Boxes(torch.tensor([[4.0, 4.0, 20.0, 20.0], [10.0, 3.5, 120.0, 110.0], [30.0, 40.0, 90.5, 100.0]])),
        Boxes(torch.tensor([[0.0, 0.0, 127.0, 127.0], [64.0, 64.0, 80.0, 71.0]])),
    ]


@pytest.mark.parametrize("pooler_type,aligned", [("ROIAlignV2", True), ("ROIAlign", False)])
def test_multilevel_roi_align_matches_torchvision(pooler_type, aligned):
    x = _pyramid()
    boxes = _boxes()
    pooler = ROIPooler(
        (7, 5),
        scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32),
        sampling_ratio=2,
        pooler_type=pooler_type,
        canonical_box_size=32,
        canonical_level=4,
    )
    out = pooler(x, boxes)
    assert out.shape == (5, 3, 7, 5)
    levels = assign_boxes_to_levels(boxes, 2, 5, 32, 4)
    assert sorted(set(levels.tolist())) == [0, 1, 2, 3]  # the test exercises every level
    rows = convert_boxes_to_pooler_format(boxes)
    for i in range(len(rows)):
        lvl = int(levels[i])
        expected = roi_align(x[lvl], rows[i : i + 1], (7, 5), 1 / (4 * 2**lvl), 2, aligned)
        assert torch.allclose(out[i : i + 1], expected, atol=1e-6)


def test_roi_pool_and_single_level():
    x = _pyramid(strides=(16,))
    boxes = _boxes()
    out = ROIPooler(4, scales=(1 / 16,), sampling_ratio=0, pooler_type="ROIPool")(x, boxes)
    expected = roi_pool(x[0], convert_boxes_to_pooler_format(boxes), (4, 4), 1 / 16)
    assert torch.equal(out, expected)
    out = ROIPooler(4, scales=(1 / 16,), sampling_ratio=0, pooler_type="ROIAlignV2")(x, boxes)
    assert torch.allclose(out, roi_align(x[0], convert_boxes_to_pooler_format(boxes), (4, 4), 1 / 16, 0, True))


def test_rotated_pooler_matches_op():
    x = _pyramid(n=1, strides=(8,))
    boxes = [RotatedBoxes(torch.tensor([[40.0, 50.0, 30.0, 20.0, 30.0], [64.0, 64.0, 50.0, 80.0, -45.0]]))]
    out = ROIPooler(3, scales=(1 / 8,), sampling_ratio=2, pooler_type="ROIAlignRotated")(x, boxes)
    rois = torch.cat([torch.zeros(2, 1), boxes[0].tensor], dim=1)
    assert torch.allclose(out, roi_align_rotated(x[0], rois, (3, 3), 1 / 8, 2))


def test_empty_inputs():
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8), sampling_ratio=0, pooler_type="ROIAlignV2")
    x = _pyramid(n=2, strides=(4, 8))
    out = pooler(x, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))])
    assert out.shape == (0, 3, 7, 7)
    out = pooler([f[:0] for f in x], [])
    assert out.shape == (0, 3, 7, 7) and out.dtype == x[0].dtype


def test_pooler_argument_errors():
    with pytest.raises(ValueError, match="power-of-2"):
        ROIPooler(7, scales=(1 / 4, 1 / 12), sampling_ratio=0, pooler_type="ROIAlignV2")
    with pytest.raises(ValueError, match="pyramid"):
        ROIPooler(7, scales=(1 / 4, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2")
    with pytest.raises(ValueError, match="pooler_type"):
        ROIPooler(7, scales=(1 / 4,), sampling_ratio=0, pooler_type="ROIAlignV3")
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8), sampling_ratio=0, pooler_type="ROIAlignV2")
    with pytest.raises(ValueError, match="feature maps"):
        pooler(_pyramid(strides=(4,)), _boxes())
    with pytest.raises(ValueError, match="images"):
        pooler(_pyramid(strides=(4, 8)), _boxes()[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pooler_on_cuda_matches_cpu():
    x = _pyramid()
    boxes = _boxes()
    pooler = ROIPooler(
        7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=2, pooler_type="ROIAlignV2", canonical_box_size=32
    )
    out = pooler([f.cuda() for f in x], [b.to("cuda") for b in boxes])
    assert out.device.type == "cuda"
    assert torch.allclose(out.cpu(), pooler(x, boxes), atol=1e-5)
