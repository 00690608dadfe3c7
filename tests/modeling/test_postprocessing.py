import pytest
import torch
import torch.nn.functional as F

from libdet.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from libdet.structures import Boxes, Instances, ROIMasks


def _results():
    r = Instances((100, 200))  # network input: 100 high, 200 wide
    r.pred_boxes = Boxes(
        torch.tensor([[10.0, 20.0, 50.0, 60.0], [190.0, 90.0, 250.0, 130.0], [300.0, 300.0, 310.0, 310.0]])
    )
    r.scores = torch.tensor([0.9, 0.8, 0.7])
    r.pred_classes = torch.tensor([1, 2, 3])
    r.pred_keypoints = torch.tensor([[[10.0, 20.0, 1.0]], [[200.0, 100.0, 0.5]], [[0.0, 0.0, 0.1]]])
    return r


def test_boxes_scaled_clipped_and_empty_dropped():
    r = _results()
    out = detector_postprocess(r, 200, 400)  # 2x in both directions
    assert out.image_size == (200, 400)
    # box 2 clipped to the image, box 3 entirely outside -> empty -> dropped with all its fields.
    assert torch.allclose(
        out.pred_boxes.tensor, torch.tensor([[20.0, 40.0, 100.0, 120.0], [380.0, 180.0, 400.0, 200.0]])
    )
    assert out.scores.tolist() == pytest.approx([0.9, 0.8])
    assert out.pred_classes.tolist() == [1, 2]
    assert torch.allclose(out.pred_keypoints, torch.tensor([[[20.0, 40.0, 1.0]], [[400.0, 200.0, 0.5]]]))
    # The input is untouched.
    assert torch.equal(r.pred_boxes.tensor[0], torch.tensor([10.0, 20.0, 50.0, 60.0]))
    assert r.pred_keypoints[0, 0, 0] == 10.0


def test_anisotropic_scale():
    r = Instances((100, 200), pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 20.0, 20.0]])))
    out = detector_postprocess(r, 50, 600)  # y * 0.5, x * 3
    assert torch.allclose(out.pred_boxes.tensor, torch.tensor([[30.0, 5.0, 60.0, 10.0]]))


@pytest.mark.parametrize("as_roi_masks", [False, True])
def test_masks_are_pasted_into_the_output_image(as_roi_masks):
    r = Instances((100, 200), pred_boxes=Boxes(torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 5.0, 5.0]])))
    masks = torch.ones(2, 1, 28, 28)
    masks[1] = 0.2  # below the threshold
    r.pred_masks = ROIMasks(masks[:, 0]) if as_roi_masks else masks
    out = detector_postprocess(r, 200, 400)
    assert out.pred_masks.shape == (2, 200, 400) and out.pred_masks.dtype == torch.bool
    expected = torch.zeros(200, 400, dtype=torch.bool)
    expected[40:120, 20:100] = True  # the scaled box [20, 40, 100, 120]
    # Bilinear sampling with zero outside the mask: edge pixels read 0.675 (kept), the four corner
    # pixels 0.675**2 < 0.5 (dropped).
    expected[[40, 40, 119, 119], [20, 99, 20, 99]] = False
    assert torch.equal(out.pred_masks[0], expected)
    assert not out.pred_masks[1].any()
    out = detector_postprocess(r, 200, 400, mask_threshold=0.1)
    assert out.pred_masks[1].sum() == 10 * 10  # a 10 px box samples only inside the 28 px mask


def test_proposal_boxes_and_missing_boxes():
    r = Instances(
        (10, 10), proposal_boxes=Boxes(torch.tensor([[1.0, 1.0, 4.0, 4.0]])), objectness_logits=torch.tensor([2.0])
    )
    out = detector_postprocess(r, 20, 20)
    assert torch.allclose(out.proposal_boxes.tensor, torch.tensor([[2.0, 2.0, 8.0, 8.0]]))
    with pytest.raises(ValueError, match="pred_boxes"):
        detector_postprocess(Instances((10, 10), scores=torch.tensor([1.0])), 20, 20)


def test_sem_seg_postprocess_crops_padding_then_resizes():
    result = torch.full((2, 8, 8), 100.0)  # padding region holds a large value
    result[0, :6, :5] = 1.0
    result[1, :6, :5] = torch.arange(30.0).reshape(6, 5)
    same = sem_seg_postprocess(result, (6, 5), 6, 5)
    assert torch.equal(same, result[:, :6, :5])
    out = sem_seg_postprocess(result, (6, 5), 12, 10)
    assert out.shape == (2, 12, 10)
    assert torch.allclose(out[0], torch.ones(12, 10))  # padding does not leak in
    expected = F.interpolate(result[None, 1:, :6, :5], size=(12, 10), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out[1], expected)
    assert out[1].max() <= 29.0
