import pytest
import torch

from libdet.layers.mask_ops import pad_masks, scale_boxes


def test_pad_masks_keeps_the_mask_in_the_middle():
    masks = torch.rand(2, 4, 4)
    padded, scale = pad_masks(masks, 1)
    assert padded.shape == (2, 6, 6) and scale == 1.5
    assert torch.equal(padded[:, 1:5, 1:5], masks)
    padded[:, 1:5, 1:5] = 0
    assert not padded.any()
    same, one = pad_masks(masks, 0)
    assert torch.equal(same, masks) and one == 1.0


def test_pad_masks_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, M, M\)"):
        pad_masks(torch.zeros(2, 4, 5), 1)
    with pytest.raises(ValueError, match="padding"):
        pad_masks(torch.zeros(2, 4, 4), -1)


def test_scale_boxes_about_the_centre():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.equal(scale_boxes(boxes, 1.5), torch.tensor([[5.0, 10.0, 35.0, 70.0]]))
