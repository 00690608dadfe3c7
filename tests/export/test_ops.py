"""The export building blocks against the eager code they replace."""

from __future__ import annotations

import torch
import torchvision

from libdet.export.ops import (
    batched_nms_by_group,
    clip_boxes,
    grid_anchors,
    nms_allowing_empty_output,
    pad_images,
    paste_masks,
    pool_rois,
    select_topk_per_image,
    to_N_HWA_K,
)
from libdet.layers.mask_ops import paste_masks_in_image
from libdet.modeling.anchor_generator import DefaultAnchorGenerator
from libdet.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from libdet.modeling.poolers import ROIPooler
from libdet.structures import Boxes, ImageList


def _random_boxes(n: int, size: float, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_paste_masks_matches_grid_sample_paste():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 28, 28, generator=g)
    boxes = _random_boxes(6, 60, g)
    boxes[0] = torch.tensor([-5.0, -3.0, 30.0, 20.0])  # partly outside the image
    image = torch.zeros(1, 3, 50, 70)
    ours = paste_masks(masks, boxes, image, 0.5)
    ref = paste_masks_in_image(masks, boxes, (50, 70), threshold=0.5)
    assert ours.shape == ref.shape == (6, 50, 70) and ours.dtype == torch.bool
    # Bilinear weights are computed differently (products vs grid_sample): pixels at the threshold may flip.
    assert (ours != ref).sum() <= 3
    assert paste_masks(masks[:0], boxes[:0], image, 0.5).shape == (0, 50, 70)


def test_pad_images_matches_image_list():
    x = torch.rand(2, 3, 45, 70)
    ref = ImageList.from_tensors(list(x), size_divisibility=32).tensor
    assert torch.equal(pad_images(x, 32), ref)
    assert torch.equal(pad_images(x, 0), x)


def test_grid_anchors_match_anchor_generator():
    gen = DefaultAnchorGenerator(sizes=[[32, 64]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8], offset=0.5)
    for h, w in [(5, 7), (1, 1), (1, 6), (4, 1)]:
        feature = torch.zeros(1, 4, h, w)
        ref = gen([feature])[0].tensor
        assert torch.equal(grid_anchors(feature, list(gen.cell_anchors)[0], 8, 0.5), ref)


def test_to_N_HWA_K_matches_permute_to_N_HWA_K():
    x = torch.rand(2, 9 * 3, 4, 5)
    assert torch.equal(to_N_HWA_K(x, 3), permute_to_N_HWA_K(x, 3))
    assert torch.equal(to_N_HWA_K(x[:, :, :1, :1], 3), permute_to_N_HWA_K(x[:, :, :1, :1], 3))


def _nms_output_lower_bound() -> int:
    """The lower bound torch.export gets for the number of boxes ``torchvision::nms`` keeps."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        keep = torch.ops.torchvision.nms(torch.rand(5, 4), torch.rand(5), 0.5)
    return int(mode.shape_env.var_to_range[keep.shape[0].node.expr].lower)


def test_nms_fake_kernel_is_scoped():
    """libdet's fake NMS kernel (0 kept boxes allowed) holds only while exporting: importing libdet.export
    leaves torchvision's in place for everyone else."""
    torchvision_bound = _nms_output_lower_bound()
    with nms_allowing_empty_output():
        assert _nms_output_lower_bound() == 0
    assert _nms_output_lower_bound() == torchvision_bound


def test_batched_nms_by_group_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    boxes = _random_boxes(200, 100, g)
    scores = torch.rand(200, generator=g)
    groups = torch.randint(0, 4, (200,), generator=g)
    images = torch.randint(0, 2, (200,), generator=g)
    ref = torchvision.ops.batched_nms(boxes, scores, groups * 2 + images, 0.5)
    assert torch.equal(batched_nms_by_group(boxes, scores, groups, 4, images, 0.5), ref)
    assert batched_nms_by_group(boxes[:0], scores[:0], groups[:0], 4, images[:0], 0.5).shape == (0,)


def test_select_topk_per_image():
    # 7 rows by decreasing score; image of each: 1, 0, 1, 1, 0, 2, 1
    batch_index = torch.tensor([1, 0, 1, 1, 0, 2, 1])
    keep = torch.arange(7)
    images = torch.zeros(3, 1, 1, 1)
    assert select_topk_per_image(keep, batch_index, images, 2).tolist() == [1, 4, 0, 2, 5]
    assert select_topk_per_image(keep, batch_index, images, -1).tolist() == [1, 4, 0, 2, 3, 6, 5]


def test_clip_boxes():
    boxes = torch.tensor([[-3.0, 2.0, 90.0, 70.0]])
    assert clip_boxes(boxes, torch.zeros(1, 3, 50, 80)).tolist() == [[0.0, 2.0, 80.0, 50.0]]


def test_pool_rois_matches_roi_pooler():
    g = torch.Generator().manual_seed(2)
    pooler = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2", canonical_box_size=32)
    features = [torch.rand(2, 4, 64 // s, 64 // s, generator=g) for s in (1, 2, 4)]
    box_lists = [Boxes(_random_boxes(5, 200, g)), Boxes(_random_boxes(3, 200, g))]
    rois = torch.cat([torch.tensor([0.0] * 5 + [1.0] * 3)[:, None], torch.cat([b.tensor for b in box_lists])], dim=1)
    assert torch.equal(pool_rois(pooler, features, rois), pooler(features, box_lists))
