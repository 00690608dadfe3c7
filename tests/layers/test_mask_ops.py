import math

import pytest
import torch

from libdet.layers import mask_ops
from libdet.layers.mask_ops import paste_masks_in_image

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|trace)` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _reference_paste(masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-pixel reference: stretch each M x M mask over its box and read it bilinearly at every
    image pixel centre, with the mask taken as 0 outside its M x M cells."""
    n, m, _ = masks.shape
    out = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        x0, y0, x1, y1 = boxes[i].double().tolist()
        mask = masks[i].double()
        for py in range(h):
            v = (py + 0.5 - y0) / (y1 - y0) * m - 0.5  # continuous mask row of the pixel centre
            for px in range(w):
                u = (px + 0.5 - x0) / (x1 - x0) * m - 0.5
                r0, c0 = math.floor(v), math.floor(u)
                val = 0.0
                for r, wr in ((r0, 1 - (v - r0)), (r0 + 1, v - r0)):
                    for c, wc in ((c0, 1 - (u - c0)), (c0 + 1, u - c0)):
                        if 0 <= r < m and 0 <= c < m:
                            val += wr * wc * mask[r, c].item()
                out[i, py, px] = val
    return out


_BOXES = torch.tensor(
    [
        [2.0, 3.0, 14.0, 11.0],  # inside
        [-5.3, 6.2, 8.7, 25.0],  # partially outside (left and bottom)
        [7.2, 4.1, 8.0, 4.6],  # tiny: smaller than a pixel
        [10.5, 0.5, 13.5, 3.5],
    ]
)
_H, _W = 16, 18


def test_soft_paste_matches_reference():
    masks = torch.rand(4, 7, 7)
    soft, region = mask_ops._do_paste_mask(masks[:, None], _BOXES, _H, _W, skip_empty=False)
    assert region == [0, _H, 0, _W]
    ref = _reference_paste(masks, _BOXES, _H, _W)
    torch.testing.assert_close(soft.double(), ref, atol=1e-5, rtol=0)
    # The tiny box still covers the pixel whose centre it contains.
    assert ref[2, 4, 7] > 0


def test_thresholded_paste_matches_reference():
    masks = torch.rand(4, 7, 7)
    ref = _reference_paste(masks, _BOXES, _H, _W)
    for threshold in (0.5, 0.2):
        out = paste_masks_in_image(masks, _BOXES, (_H, _W), threshold=threshold)
        assert out.dtype == torch.bool and out.shape == (4, _H, _W)
        decided = (ref - threshold).abs() > 1e-5  # ignore pixels numerically on the threshold
        assert decided.float().mean() > 0.99
        assert torch.equal(out[decided], (ref >= threshold)[decided])
    low = paste_masks_in_image(masks, _BOXES, (_H, _W), threshold=0.2)
    high = paste_masks_in_image(masks, _BOXES, (_H, _W), threshold=0.5)
    assert torch.all(low | ~high) and low.sum() > high.sum()


def test_negative_threshold_gives_uint8_soft_masks():
    masks = torch.rand(4, 7, 7)
    out = paste_masks_in_image(masks, _BOXES, (_H, _W), threshold=-1)
    assert out.dtype == torch.uint8
    ref = torch.floor(_reference_paste(masks, _BOXES, _H, _W) * 255)
    assert (out.double() - ref).abs().max() <= 1


def test_per_mask_cpu_path_equals_whole_image_paste():
    masks = torch.rand(4, 9, 9)
    soft, _ = mask_ops._do_paste_mask(masks[:, None], _BOXES, _H, _W, skip_empty=False)
    out = paste_masks_in_image(masks, _BOXES, (_H, _W), threshold=-1)
    assert torch.equal(out, (soft * 255).to(torch.uint8))


def test_box_outside_image_and_empty_input():
    masks = torch.ones(2, 5, 5)
    boxes = torch.tensor([[30.0, 40.0, 50.0, 60.0], [-20.0, -10.0, -5.0, -2.0]])
    out = paste_masks_in_image(masks, boxes, (_H, _W))
    assert out.shape == (2, _H, _W) and not out.any()
    empty = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (_H, _W))
    assert empty.shape == (0, _H, _W) and empty.dtype == torch.bool
    assert paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (_H, _W), -1).dtype == torch.uint8


def test_full_mask_fills_its_box():
    out = paste_masks_in_image(torch.ones(1, 4, 4), torch.tensor([[2.0, 3.0, 10.0, 7.0]]), (_H, _W))
    expected = torch.zeros(_H, _W, dtype=torch.bool)
    expected[3:7, 2:10] = True
    assert torch.equal(out[0], expected)


def test_accepts_boxes_object_and_half_masks():
    class _Boxes:
        def __init__(self, tensor):
            self.tensor = tensor

    masks = torch.rand(4, 7, 7)
    expected = paste_masks_in_image(masks, _BOXES, (_H, _W))
    assert torch.equal(paste_masks_in_image(masks, _Boxes(_BOXES), (_H, _W)), expected)
    half = paste_masks_in_image(masks.half(), _BOXES, (_H, _W))
    assert half.dtype == torch.bool and (half != expected).float().mean() < 0.01


def test_input_checks():
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(torch.rand(2, 7, 5), _BOXES[:2], (_H, _W))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(torch.rand(2, 7, 7), _BOXES, (_H, _W))


def test_scripted_and_traced_paste():
    masks = torch.rand(4, 7, 7)
    expected = paste_masks_in_image(masks, _BOXES, (_H, _W))
    scripted = torch.jit.script(mask_ops._paste_masks)
    assert torch.equal(scripted(masks, _BOXES, (_H, _W), 0.5), expected)

    def f(masks, boxes):
        return paste_masks_in_image(masks, boxes, (_H, _W))

    traced = torch.jit.trace(f, (masks[:2], _BOXES[:2]), check_trace=False)
    assert torch.equal(traced(masks, _BOXES), expected)  # a different number of masks than traced


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(monkeypatch):
    masks = torch.rand(4, 7, 7)
    expected = paste_masks_in_image(masks, _BOXES, (_H, _W))
    assert torch.equal(paste_masks_in_image(masks.cuda(), _BOXES.cuda(), (_H, _W)).cpu(), expected)
    monkeypatch.setattr(mask_ops, "GPU_MEM_LIMIT", _H * _W * 4 * 2)  # force chunks of 2 masks
    assert torch.equal(paste_masks_in_image(masks.cuda(), _BOXES.cuda(), (_H, _W)).cpu(), expected)
