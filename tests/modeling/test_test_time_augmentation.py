"""Test-time augmentation: the augmented inputs, equivalence with plain inference at the model's own size,
and flips undone for boxes, masks and (left/right swapped) keypoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from libdet.config import instantiate
from libdet.data import transforms as T
from libdet.data.catalog import Metadata
from libdet.modeling.meta_arch.rcnn import GeneralizedRCNN
from libdet.modeling.test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA
from libdet.structures import Boxes, Instances

from ._tiny_models import single_thread, synthetic_image, tiny_mask_rcnn_fpn  # noqa: F401


def test_mapper_makes_resized_and_flipped_inputs():
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30) % 255
    mapper = DatasetMapperTTA(min_sizes=[20, 40], max_size=70, flip=True)
    outs = mapper({"image": image, "height": 20, "width": 30, "file_name": "x.jpg"})
    assert [tuple(o["image"].shape) for o in outs] == [(3, 20, 30), (3, 20, 30), (3, 40, 60), (3, 40, 60)]
    assert all(o["file_name"] == "x.jpg" and o["image"].dtype == torch.float32 for o in outs)
    assert torch.equal(outs[0]["image"], image)
    assert torch.equal(outs[1]["image"], image.flip(dims=[2]))
    flipped = [any(isinstance(t, T.HFlipTransform) for t in o["transforms"].transforms) for o in outs]
    assert flipped == [False, True, False, True]
    box = np.array([[3.0, 4.0, 10.0, 12.0]])
    np.testing.assert_allclose(outs[3]["transforms"].apply_box(box), [[40.0, 8.0, 54.0, 24.0]])
    # max_size caps the longer side: 40 x 60 would exceed 50.
    assert tuple(DatasetMapperTTA(min_sizes=[40], max_size=50, flip=False)({"image": image})[0]["image"].shape) == (
        3,
        33,
        50,
    )


def test_mapper_starts_from_the_original_resolution():
    # The input is a 2x downscaled version of a 40 x 60 original: transforms map original coordinates.
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    (out,) = DatasetMapperTTA(min_sizes=[40], max_size=1000, flip=False)({"image": image, "height": 40, "width": 60})
    assert tuple(out["image"].shape) == (3, 40, 60) and out["image"].dtype == torch.uint8
    np.testing.assert_allclose(out["transforms"].apply_box(np.array([[2.0, 4.0, 20.0, 30.0]])), [[2, 4, 20, 30]])


def test_mapper_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_sizes"):
        DatasetMapperTTA(min_sizes=[], max_size=100)
    with pytest.raises(ValueError, match="max_size"):
        DatasetMapperTTA(min_sizes=[10], max_size=0)


def test_one_scale_without_flip_equals_plain_inference(single_thread):  # noqa: F811
    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_fpn()
    cfg.roi_heads.box_predictor.test_score_thresh = 0.0
    model = instantiate(cfg).eval()
    data = synthetic_image(0, 64, 96, [(10, 10, 40, 50), (50, 20, 90, 60)], [0, 2])
    inputs = {"image": data["image"].round().to(torch.uint8), "height": 64, "width": 96}
    tta = GeneralizedRCNNWithTTA(model, tta_mapper=DatasetMapperTTA(min_sizes=[64], max_size=1000, flip=False))
    with torch.no_grad():
        plain = model([inputs])[0]["instances"]
        out = tta([inputs])[0]["instances"]
    assert len(plain) > 10
    assert out.image_size == plain.image_size
    torch.testing.assert_close(out.pred_boxes.tensor, plain.pred_boxes.tensor)
    torch.testing.assert_close(out.scores, plain.scores)
    assert torch.equal(out.pred_classes, plain.pred_classes)
    assert torch.equal(out.pred_masks, plain.pred_masks)


# A fake, flip-equivariant R-CNN whose outputs are read off the image: boxes, masks and keypoints are
# known exactly, so flips can be checked by hand.
HEAT = 8  # heatmap side


class _Backbone(nn.Module):
    size_divisibility = 0
    padding_constraints: dict = {}

    def forward(self, x):
        return {"img": x}


class _Proposals(nn.Module):
    def forward(self, images, features, gt_instances=None):
        return [Instances(size) for size in images.image_sizes], {}


class _Predictor:
    test_nms_thresh = 0.5
    test_topk_per_image = 100


class _ROIHeads(nn.Module):
    """Detects the bright rectangle of channel 0 (class 0, score 0.9); its mask is channel 1 pooled in the box;
    keypoint "left" / "right" are the centroids of the channel-2 dots in the left / right half of the box."""

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.box_predictor = _Predictor()
        self.mask_on = True
        self.keypoint_on = True

    def forward(self, images, features, proposals, targets=None):
        detections = []
        for i, (h, w) in enumerate(images.image_sizes):
            ys, xs = torch.nonzero(features["img"][i, 0, :h, :w] > 128, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            detections.append(
                Instances((h, w), pred_boxes=Boxes(box), scores=torch.tensor([0.9]), pred_classes=torch.tensor([0]))
            )
        return self.forward_with_given_boxes(features, detections), {}

    def forward_with_given_boxes(self, features, instances):
        img = features["img"]
        for i, inst in enumerate(instances):
            boxes = inst.pred_boxes.tensor
            if self.mask_on:
                rois = torch.cat([torch.full((len(boxes), 1), float(i)), boxes], dim=1)
                inst.pred_masks = roi_align(img[:, 1:2], rois, HEAT, 1.0, 2, aligned=True) / 255
            if self.keypoint_on:
                kps, heatmaps = [], []
                for x0, y0, x1, y1 in boxes.tolist():
                    kp = [
                        self._dot(img[i, 2], x0, y0, (x0 + x1) / 2, y1),
                        self._dot(img[i, 2], (x0 + x1) / 2, y0, x1, y1),
                    ]
                    kps.append(torch.tensor(kp))
                    u = (torch.tensor(kp)[:, 0] - x0) / (x1 - x0) * HEAT  # box-relative heatmap position
                    v = (torch.tensor(kp)[:, 1] - y0) / (y1 - y0) * HEAT
                    grid = torch.arange(HEAT) + 0.5
                    heatmaps.append(
                        -((grid[None, None, :] - u[:, None, None]) ** 2 + (grid[None, :, None] - v[:, None, None]) ** 2)
                    )
                inst.pred_keypoints = torch.stack(kps) if kps else torch.zeros(0, 2, 3)
                inst.pred_keypoint_heatmaps = torch.stack(heatmaps) if heatmaps else torch.zeros(0, 2, HEAT, HEAT)
        return instances

    @staticmethod
    def _dot(channel, x0, y0, x1, y1):
        region = channel[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))]
        ys, xs = torch.nonzero(region > 128, as_tuple=True)
        return [
            float(xs.float().mean() + 0.5 + round(x0)),
            float(ys.float().mean() + 0.5 + round(y0)),
            float(region.max() / 255),
        ]


def _fake_model():
    return GeneralizedRCNN(
        backbone=_Backbone(),
        proposal_generator=_Proposals(),
        roi_heads=_ROIHeads(),
        pixel_mean=[0, 0, 0],
        pixel_std=[1, 1, 1],
    ).eval()


def _fake_image():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[0, 8:28, 10:30] = 255  # the object: box (10, 8, 30, 28)
    image[1, 8:28, 10:18] = 255  # its mask: the left part
    image[2, 15:17, 14:16] = 200  # left dot, centre (15, 16)
    image[2, 19:21, 24:26] = 150  # right dot, centre (25, 20)
    return {"image": image, "height": 40, "width": 60}


def test_flip_is_undone_for_boxes_masks_and_keypoints():
    model = _fake_model()
    inputs = _fake_image()
    with torch.no_grad():
        plain = model([inputs])[0]["instances"]
        tta = GeneralizedRCNNWithTTA(
            model, tta_mapper=DatasetMapperTTA(min_sizes=[40], max_size=1000, flip=True), keypoint_flip_indices=[1, 0]
        )
        out = tta([inputs])[0]["instances"]
    torch.testing.assert_close(plain.pred_boxes.tensor, torch.tensor([[10.0, 8, 30, 28]]))
    torch.testing.assert_close(plain.pred_keypoints, torch.tensor([[[15.0, 16, 200 / 255], [25.0, 20, 150 / 255]]]))
    assert plain.pred_masks[0, 10:26, 11:17].all() and not plain.pred_masks[0, :, 19:].any()  # the left part
    # The flipped detection maps back onto the original one, and the two merge into one.
    assert len(out) == 1
    torch.testing.assert_close(out.pred_boxes.tensor, plain.pred_boxes.tensor)
    torch.testing.assert_close(out.scores, plain.scores)
    assert torch.equal(out.pred_masks, plain.pred_masks)
    torch.testing.assert_close(out.pred_keypoints, plain.pred_keypoints)
    torch.testing.assert_close(out.pred_keypoint_heatmaps, plain.pred_keypoint_heatmaps)

    # Without the left/right swap, each keypoint would be averaged with its mirror image.
    with torch.no_grad():
        unswapped = GeneralizedRCNNWithTTA(
            model, tta_mapper=DatasetMapperTTA(min_sizes=[40], max_size=1000, flip=True), keypoint_flip_indices=[0, 1]
        )([inputs])[0]["instances"]
    torch.testing.assert_close(unswapped.pred_keypoints[0, :, 0], torch.tensor([20.0, 20.0]))
    # The branches were switched back on after the box pass.
    assert model.roi_heads.mask_on and model.roi_heads.keypoint_on


def test_several_scales_map_back_to_the_original_image():
    model = _fake_model()
    inputs = _fake_image()
    meta = Metadata(name="tta_fake_kp", keypoint_names=["left", "right"], keypoint_flip_map=[("left", "right")])
    tta = GeneralizedRCNNWithTTA(
        model, tta_mapper=DatasetMapperTTA(min_sizes=[40, 80], max_size=1000, flip=True), metadata=meta, batch_size=3
    )
    assert tta.keypoint_flip_indices.tolist() == [1, 0]
    with torch.no_grad():
        augmented = tta.tta_mapper(tta._maybe_read_image(0, inputs))
        tfms = [x.pop("transforms") for x in augmented]
        boxes, scores, classes = tta._get_augmented_boxes(augmented, tfms)
        out = tta([inputs])[0]["instances"]
    assert len(boxes) == 4 and classes.tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(boxes, torch.tensor([[10.0, 8, 30, 28]]).expand(4, 4), atol=0.5, rtol=0)
    assert len(out) == 1
    torch.testing.assert_close(out.pred_keypoints[0, :, :2], torch.tensor([[15.0, 16], [25.0, 20]]), atol=0.5, rtol=0)


def test_tta_argument_errors():
    mapper = DatasetMapperTTA(min_sizes=[40], max_size=100)
    with pytest.raises(TypeError, match="GeneralizedRCNN"):
        GeneralizedRCNNWithTTA(nn.Linear(2, 2), tta_mapper=mapper)
    with pytest.raises(ValueError, match="keypoint_flip_indices"):
        GeneralizedRCNNWithTTA(_fake_model(), tta_mapper=mapper)
    tta = GeneralizedRCNNWithTTA(_fake_model(), tta_mapper=mapper, keypoint_flip_indices=[1, 0, 2])
    with pytest.raises(ValueError, match="3 entries"):
        with torch.no_grad():
            tta([_fake_image()])
    model = _fake_model().train()
    with pytest.raises(RuntimeError, match="eval"):
        GeneralizedRCNNWithTTA(model, tta_mapper=mapper, keypoint_flip_indices=[1, 0])([_fake_image()])
