import math

import pytest
import torch

from libdet.structures import Boxes, Keypoints, heatmaps_to_keypoints


def test_construction_and_container():
    kp = Keypoints([[[1, 2, 2], [3, 4, 0]], [[5, 6, 1], [7, 8, 2]]])
    assert kp.tensor.dtype == torch.float32 and kp.tensor.shape == (2, 2, 3)
    assert len(kp) == 2 and kp.device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"\(N, K, 3\).*\(2, 2\)"):
        Keypoints(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        Keypoints(torch.zeros(1, 2, 2))

    one = kp[1]
    assert isinstance(one, Keypoints) and one.tensor.shape == (1, 2, 3)
    assert one.tensor[0, 0].tolist() == [5.0, 6.0, 1.0]
    assert torch.equal(kp[-1].tensor, one.tensor)
    assert torch.equal(kp[0:1].tensor, kp.tensor[:1])
    assert torch.equal(kp[torch.tensor([False, True])].tensor, one.tensor)
    assert torch.equal(kp[torch.tensor([1, 0])].tensor, kp.tensor.flip(0))

    cat = Keypoints.cat([kp, one, Keypoints(torch.zeros(0, 2, 3))])
    assert len(cat) == 3 and torch.equal(cat.tensor[2], kp.tensor[1])
    with pytest.raises(ValueError, match="non-empty"):
        Keypoints.cat([])
    with pytest.raises(TypeError, match=r"keypoints_list\[1\]"):
        Keypoints.cat([kp, kp.tensor])

    as_double = kp.to(torch.float64)
    assert isinstance(as_double, Keypoints) and as_double.tensor.dtype == torch.float32  # stored as float32
    assert kp.to("cpu").device == torch.device("cpu")
    assert repr(kp) == "Keypoints(num_instances=2)"


def test_to_heatmap_hand_placed_points():
    keypoints = Keypoints(
        [
            [
                [1.0, 1.0, 2.0],  # bin (0, 0)
                [5.0, 3.0, 2.0],  # x bin 2, y bin 1 -> 1 * 4 + 2
                [8.0, 8.0, 2.0],  # on the right and bottom edges -> last bin (3, 3)
                [3.0, 3.0, 0.0],  # not labeled -> invalid
                [9.0, 1.0, 2.0],  # right of the box -> invalid
                [-1.0, 2.0, 1.0],  # left of the box -> invalid
                [8.0, 9.0, 2.0],  # on the right edge but below the box -> invalid
                [7.99, 0.0, 1.0],  # just inside the right edge, on the top edge: (3, 0); occluded counts
            ],
            [
                [11.5, 21.2, 1.0],  # box 2: x scale 1, y scale 2 -> x bin 1, y bin 2 -> 2 * 4 + 1
                [10.0, 20.0, 2.0],  # top-left corner -> 0
                [14.0, 21.0, 2.0],  # on the right edge -> x bin 3, y bin 2 -> 11
                [12.0, 22.0, 2.0],  # on the bottom edge -> x bin 2, y bin 3 -> 14
                [0.0, 0.0, 0.0],
                [13.0, 19.9, 2.0],  # above the box -> invalid
                [12.0, 21.0, -1.0],  # negative visibility -> invalid
                [13.9, 21.9, 2.0],  # x bin 3, y bin 3 -> 15
            ],
        ]
    )
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, 20.0, 14.0, 22.0]])
    heatmaps, valid = keypoints.to_heatmap(boxes, 4)
    assert heatmaps.dtype == torch.int64 and valid.dtype == torch.int64
    assert valid.tolist() == [[1, 1, 1, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0, 1]]
    assert heatmaps.tolist() == [[0, 6, 15, 0, 0, 0, 0, 3], [9, 0, 11, 14, 0, 0, 0, 15]]
    heatmaps_b, valid_b = keypoints.to_heatmap(Boxes(boxes), 4)
    assert torch.equal(heatmaps_b, heatmaps) and torch.equal(valid_b, valid)


def test_to_heatmap_empty():
    heatmaps, valid = Keypoints(torch.zeros(0, 17, 3)).to_heatmap(torch.zeros(0, 4), 56)
    assert heatmaps.numel() == 0 and valid.numel() == 0
    assert heatmaps.dtype == torch.int64 and valid.dtype == torch.int64


def test_heatmaps_to_keypoints_recovers_peak():
    maps = torch.zeros(2, 2, 8, 8)
    maps[0, 0, 5, 3] = 4.0  # keypoint 0 of roi 0 peaks at column 3, row 5
    maps[0, 1, 0, 7] = 2.0
    maps[1, 0, 2, 6] = 3.0
    maps[1, 1, 7, 0] = 1.0
    # Both rois are as large as the maps, so the bicubic resize is the identity.
    rois = torch.tensor([[10.0, 20.0, 18.0, 28.0], [0.0, 0.0, 7.5, 8.0]])
    out = heatmaps_to_keypoints(maps, rois)
    assert out.shape == (2, 2, 4)

    # Pixel centres at +0.5, plus the roi offset.
    torch.testing.assert_close(out[0, :, :2], torch.tensor([[13.5, 25.5], [17.5, 20.5]]))
    # Roi 1 is 7.5 wide: resized to ceil(7.5) = 8 columns, then x is scaled back by 7.5 / 8.
    torch.testing.assert_close(out[1, :, :2], torch.tensor([[6.5 * 7.5 / 8, 2.5], [0.5 * 7.5 / 8, 7.5]]))
    # The logit is the heatmap value at the peak; the score is exp(0) over the sum of exp(map - peak).
    torch.testing.assert_close(out[:, :, 2], torch.tensor([[4.0, 2.0], [3.0, 1.0]]))
    expected_scores = torch.tensor([[1 / (1 + 63 * math.exp(-v)) for v in row] for row in [[4.0, 2.0], [3.0, 1.0]]])
    torch.testing.assert_close(out[:, :, 3], expected_scores)


def test_heatmaps_to_keypoints_upsampled_and_tiny_rois():
    maps = torch.zeros(2, 1, 4, 4)
    maps[:, 0, 1, 2] = 5.0
    rois = torch.tensor([[0.0, 0.0, 8.0, 8.0], [3.0, 4.0, 3.2, 4.5]])
    out = heatmaps_to_keypoints(maps, rois)
    # Roi 0 doubles the map: heatmap pixel (2, 1) spans image x [4, 6), y [2, 4); the bicubic peak is in
    # one of its two upsampled columns/rows (their centres are 4.5/5.5 and 2.5/3.5).
    assert out[0, 0, 0].item() in (4.5, 5.5) and out[0, 0, 1].item() in (2.5, 3.5)
    # Roi 1 is smaller than a pixel: its size is clamped to 1x1 and the prediction is its centre pixel.
    torch.testing.assert_close(out[1, 0, :2], torch.tensor([3.5, 4.5]))
    assert torch.isfinite(out).all()


def test_heatmaps_to_keypoints_empty_and_no_grad():
    assert heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4)).shape == (0, 17, 4)
    maps = torch.randn(1, 3, 6, 6, requires_grad=True)
    out = heatmaps_to_keypoints(maps, torch.tensor([[0.0, 0.0, 6.0, 6.0]]))
    assert not out.requires_grad
