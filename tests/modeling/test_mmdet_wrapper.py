"""MMDetBackbone / MMDetDetector with plain torch modules and a fake mmdet 2.x detector (mmdet not needed)."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from libdet.layers import ShapeSpec
from libdet.modeling import MMDetBackbone, MMDetDetector
from libdet.structures import Boxes, Instances
from libdet.utils.events import EventStorage


class _TupleConvs(nn.Module):
    """mmdet-style backbone: stride-2 convs, returns a tuple of every stage's output."""

    def __init__(self, channels=(3, 4, 8)):
        super().__init__()
        self.stages = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(channels, channels[1:]))
        self.init_calls = 0

    def init_weights(self, pretrained=None):
        self.init_calls += 1
        self.pretrained = pretrained

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


class _TupleNeck(nn.Module):
    """mmdet-style neck: 1x1 conv of each input to 6 channels."""

    def __init__(self, in_channels=(4, 8)):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, 6, 1) for c in in_channels)

    def forward(self, inputs):
        return tuple(conv(x) for conv, x in zip(self.lateral, inputs))


def test_mmdet_backbone_names_shapes_and_count_check():
    shapes = [ShapeSpec(channels=6, stride=2), ShapeSpec(channels=6, stride=4)]
    backbone = _TupleConvs()
    model = MMDetBackbone(backbone=backbone, neck=_TupleNeck(), output_shapes=shapes)
    assert backbone.init_calls == 1 and backbone.pretrained is None
    assert (
        MMDetBackbone(backbone=_TupleConvs(), pretrained_backbone="w.pth", output_shapes=shapes).backbone.pretrained
        == "w.pth"
    )
    out = model(torch.randn(2, 3, 32, 32))
    assert list(out) == ["out0", "out1"] and model.output_shape() == {"out0": shapes[0], "out1": shapes[1]}
    assert out["out0"].shape == (2, 6, 16, 16) and out["out1"].shape == (2, 6, 8, 8)

    named = MMDetBackbone(backbone=_TupleConvs(), output_shapes=shapes, output_names=["p2", "p3"])
    assert {k: v.shape[1] for k, v in named(torch.randn(1, 3, 16, 16)).items()} == {"p2": 4, "p3": 8}

    too_many = MMDetBackbone(backbone=_TupleConvs(), output_shapes=shapes + [ShapeSpec(channels=6, stride=8)])
    with pytest.raises(ValueError, match="returned 2 feature maps, but 3 output_shapes"):
        too_many(torch.randn(1, 3, 16, 16))


@pytest.mark.skipif(importlib.util.find_spec("mmdet") is not None, reason="mmdet is installed")
def test_config_dict_without_mmdet_names_the_package():
    with pytest.raises(ImportError, match="`mmdet`"):
        MMDetBackbone(backbone={"type": "ResNet", "depth": 18}, output_shapes=[ShapeSpec(channels=64)])
    with pytest.raises(ImportError, match="`mmdet`"):
        MMDetDetector(detector={"type": "MaskRCNN"}, pixel_mean=[0.0], pixel_std=[1.0])


class _FakeMMDetDetector(nn.Module):
    """Follows mmdet 2.x: ``forward_train`` returns a loss dict, ``simple_test`` returns per-image, per-class
    ``[x1, y1, x2, y2, score]`` arrays (plus masks), divided by ``scale_factor`` when ``rescale``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None):
        self.calls.append(("train", img, img_metas, gt_bboxes, gt_labels))
        return {
            "loss_cls": self.w * 2.0,
            "loss_bbox": [self.w * 1.0, self.w * 3.0],  # per-level losses, summed by the wrapper
            "acc": torch.tensor(87.5),
        }

    def simple_test(self, img, img_metas, rescale=False):
        self.calls.append(("test", img, img_metas, rescale))
        results = []
        for meta in img_metas:
            dets = np.array([[8.0, 4.0, 24.0, 20.0, 0.9], [0.0, 0.0, 16.0, 8.0, 0.5]], dtype=np.float32)
            if rescale:
                dets[:, :4] /= meta["scale_factor"]
            h, w = meta["ori_shape"][:2] if rescale else meta["img_shape"][:2]
            mask = np.zeros((h, w), dtype=bool)
            mask[:2, :3] = True
            # class 0: no detection, class 1: the first box, class 2: the second one
            bbox_result = [np.zeros((0, 5), np.float32), dets[:1], dets[1:]]
            results.append((bbox_result, [[], [mask], [mask.copy()]]))
        return results


def _inputs():
    torch.manual_seed(0)
    images = [torch.rand(3, 30, 40) * 255, torch.rand(3, 24, 36) * 255]
    inputs = [{"image": im, "height": im.shape[1] * 2, "width": im.shape[2] * 2} for im in images]
    for x in inputs:
        inst = Instances(tuple(x["image"].shape[1:]))
        inst.gt_boxes = Boxes(torch.tensor([[1.0, 2.0, 10.0, 12.0]]))
        inst.gt_classes = torch.tensor([3])
        x["instances"] = inst
    return inputs


def test_mmdet_detector_training_and_inference():
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    fake = _FakeMMDetDetector()
    model = MMDetDetector(detector=fake, size_divisibility=32, pixel_mean=mean, pixel_std=std)
    inputs = _inputs()

    with EventStorage() as storage:
        losses = model.train()(inputs)
        assert storage.latest()["acc"][0] == pytest.approx(87.5)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    assert losses["loss_cls"].item() == 2.0 and losses["loss_bbox"].item() == 4.0
    _, img, metas, gt_bboxes, gt_labels = fake.calls[-1]
    assert img.shape == (2, 3, 32, 64)  # padded to multiples of 32
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(img[1, :, :24, :36], (inputs[1]["image"] - m) / s)
    assert (img[1, :, 24:] == 0).all() and (img[1, :, :, 36:] == 0).all()
    assert metas[0]["img_shape"] == (30, 40, 3) and metas[0]["pad_shape"] == (32, 64, 3)
    assert metas[0]["ori_shape"] == (60, 80, 3) and metas[0]["flip"] is False
    np.testing.assert_allclose(metas[1]["scale_factor"], [0.5, 0.5, 0.5, 0.5])
    torch.testing.assert_close(gt_bboxes[0], torch.tensor([[1.0, 2.0, 10.0, 12.0]]))
    assert gt_labels[1].tolist() == [3]

    with torch.no_grad():
        outputs = model.eval()(inputs)
    assert fake.calls[-1][0] == "test" and fake.calls[-1][3] is True
    inst = outputs[0]["instances"]
    assert inst.image_size == (60, 80)
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[16.0, 8.0, 48.0, 40.0], [0.0, 0.0, 32.0, 16.0]]))
    torch.testing.assert_close(inst.scores, torch.tensor([0.9, 0.5]))
    assert inst.pred_classes.tolist() == [1, 2]
    assert inst.pred_masks.shape == (2, 60, 80) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_masks[:, :2, :3].all() and inst.pred_masks.sum().item() == 12

    # Without height/width, mmdet is asked not to rescale and results stay in input-image coordinates.
    no_size = [{"image": x["image"]} for x in inputs]
    with torch.no_grad():
        inst = model(no_size)[1]["instances"]
    assert fake.calls[-1][3] is False and inst.image_size == (24, 36)
    torch.testing.assert_close(inst.pred_boxes.tensor[0], torch.tensor([8.0, 4.0, 24.0, 20.0]))
    with pytest.raises(ValueError, match="'height'/'width'"):
        model([inputs[0], no_size[1]])
