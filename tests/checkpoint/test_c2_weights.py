"""Caffe2 / Detectron1 weight files load into libdet models with detectron2's names and class order.

The files are made here from a model's ``state_dict`` by the inverse of the name conversion (the layout of
detectron2's ``ImageNetPretrained/MSRA/R-50.pkl`` and of Detectron1 ``model_final.pkl``), then loaded into a
freshly initialised model, which must end up with exactly the original tensors.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

from libdet.checkpoint import DetectionCheckpointer
from libdet.checkpoint.c2_model_loading import (
    align_and_update_state_dicts,
    convert_basic_c2_names,
    convert_c2_detectron_names,
)
from libdet.config import instantiate
from libdet.modeling.backbone import BasicStem, ResNet
from tests.modeling._tiny_models import tiny_keypoint_rcnn_fpn, tiny_mask_rcnn_c4, tiny_mask_rcnn_fpn

_NORM_TO_C2 = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_CONV_TO_C2 = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def _backbone_to_c2(name: str) -> str:
    """``res2.0.conv1.norm.weight`` -> ``res2_0_branch2a_bn_s``; ``stem.conv1.weight`` -> ``conv1_w``."""
    if name.startswith("stem.conv1.norm."):
        return "res_conv1_bn_" + _NORM_TO_C2[name.rsplit(".", 1)[1]]
    if name.startswith("stem.conv1."):
        return "conv1_" + name.rsplit(".", 1)[1][0]
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?(\w+)", name)
    assert m, name
    stage, block, conv, norm, param = m.groups()
    base = f"res{stage}_{block}_{_CONV_TO_C2[conv]}"
    return f"{base}_bn_{_NORM_TO_C2[param]}" if norm else f"{base}_{param[0]}"


def _to_c2_name(key: str) -> str:
    """The Detectron1 blob name of a detectron2 model key (the inverse of the conversion)."""
    param = key.rsplit(".", 1)[1]
    wb = param[0]  # weight -> w, bias -> b
    for prefix in ("backbone.bottom_up.", "backbone.", "roi_heads.", ""):
        if key.startswith(prefix) and re.match(r"(stem|res\d)\.", key[len(prefix) :]):
            return _backbone_to_c2(key[len(prefix) :])
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)\.(weight|bias)", key)
    if m:
        kind, level = m.group(1), int(m.group(2))
        if kind == "output":
            return f"fpn_res{level}_2_sum_{wb}"
        return f"fpn_inner_res{level}_2_sum_{wb}" if level == 5 else f"fpn_inner_res{level}_2_sum_lateral_{wb}"
    fixed = {
        "proposal_generator.rpn_head.conv": "conv_rpn{fpn}",
        "proposal_generator.rpn_head.objectness_logits": "rpn_cls_logits{fpn}",
        "proposal_generator.rpn_head.anchor_deltas": "rpn_bbox_pred{fpn}",
        "roi_heads.box_head.fc1": "fc6",
        "roi_heads.box_head.fc2": "fc7",
        "roi_heads.box_predictor.cls_score": "cls_score",
        "roi_heads.box_predictor.bbox_pred": "bbox_pred",
        "roi_heads.mask_head.deconv": "conv5_mask",
        "roi_heads.mask_head.predictor": "mask_fcn_logits",
        "roi_heads.keypoint_head.score_lowres": "kps_score_lowres",
    }
    module = key.rsplit(".", 1)[0]
    if module in fixed:
        return fixed[module] + f"_{wb}"
    m = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d)", module)
    if m:
        return f"_[mask]_fcn{m.group(1)}_{wb}"
    m = re.fullmatch(r"roi_heads\.keypoint_head\.conv_fcn(\d)", module)
    if m:
        return f"conv_fcn{m.group(1)}_{wb}"
    raise AssertionError(f"no Caffe2 name for {key}")


def _c2_blobs(state_dict, *, fpn: bool, running_stats: bool = True) -> dict[str, np.ndarray]:
    """Detectron1 blobs of a detectron2 state_dict: background class first, extra background outputs."""
    rng = np.random.default_rng(0)
    blobs = {}
    for key, value in state_dict.items():
        if not running_stats and key.endswith(("running_mean", "running_var")):
            continue  # MSRA ImageNet files have AffineChannel (scale, bias) only
        name = _to_c2_name(key).format(fpn="_fpn2" if fpn else "")
        array = value.numpy().copy()
        if name.startswith("cls_score_"):
            array = np.concatenate([array[-1:], array[:-1]])  # detectron2: background last
        elif name.startswith("bbox_pred_"):
            array = np.concatenate([rng.standard_normal((4, *array.shape[1:])).astype(array.dtype), array])
        elif name.startswith("mask_fcn_logits_"):
            array = np.concatenate([rng.standard_normal((1, *array.shape[1:])).astype(array.dtype), array])
        assert name not in blobs, name
        blobs[name] = array
    return blobs


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Distinct values in every parameter and buffer (FrozenBN statistics included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) + 0.5
                tensor.copy_(values if "running_var" in name else values - 1.0)
    return model


def _dump(path, obj) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


def test_basic_names():
    c2 = [
        "conv1_w",
        "res_conv1_bn_s",
        "res_conv1_bn_b",
        "res2_0_branch1_w",
        "res3_1_branch2b_bn_b",
        "res5_2_branch2c_w",
    ]
    assert convert_basic_c2_names(c2) == [
        "stem.conv1.weight",
        "stem.conv1.norm.weight",
        "stem.conv1.norm.bias",
        "res2.0.shortcut.weight",
        "res3.1.conv2.norm.bias",
        "res5.2.conv3.weight",
    ]


def test_detectron1_names_and_class_order():
    cls = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)  # background + 3 classes
    box = np.arange(16, dtype=np.float32).reshape(16, 1)
    blobs = {
        "fpn_inner_res4_5_sum_lateral_w": np.zeros(1),
        "fpn_inner_res5_2_sum_b": np.zeros(1),
        "fpn_res3_3_sum_w": np.zeros(1),
        "conv_rpn_fpn2_w": np.zeros(1),
        "rpn_cls_logits_fpn2_b": np.zeros(1),
        "fc6_w": np.zeros(1),
        "_[mask]_fcn2_b": np.zeros(1),
        "conv_fcn8_w": np.zeros(1),
        "kps_score_lowres_b": np.zeros(1),
        "cls_score_w": cls,
        "bbox_pred_w": box,
        "fc1000_w": np.zeros(1),
        "res2_0_branch2a_w_momentum": np.zeros(1),
    }
    new, original = convert_c2_detectron_names(blobs)
    assert set(new) == {
        "fpn_lateral4.weight",
        "fpn_lateral5.bias",
        "fpn_output3.weight",
        "proposal_generator.rpn_head.conv.weight",
        "proposal_generator.rpn_head.objectness_logits.bias",
        "box_head.fc1.weight",
        "mask_head.mask_fcn2.bias",
        "roi_heads.keypoint_head.conv_fcn8.weight",
        "roi_heads.keypoint_head.score_lowres.bias",
        "cls_score.weight",
        "bbox_pred.weight",
    }
    assert original["cls_score.weight"] == "cls_score_w"
    np.testing.assert_array_equal(new["cls_score.weight"], np.concatenate([cls[1:], cls[:1]]))
    np.testing.assert_array_equal(new["bbox_pred.weight"], box[4:])


def _tiny_bottleneck_resnet(norm: str) -> ResNet:
    stages = ResNet.make_default_stages(
        50, width_per_group=4, stem_out_channels=8, res2_out_channels=16, norm=norm, stride_in_1x1=True
    )
    return ResNet(stem=BasicStem(out_channels=8, norm=norm), stages=stages, out_features=["res4", "res5"])


class _Detector(nn.Module):
    """A model whose backbone parameters are named like a detectron2 FPN detector's."""

    def __init__(self, norm: str):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.bottom_up = _tiny_bottleneck_resnet(norm)


@pytest.mark.parametrize("running_stats", [False, True])
def test_imagenet_backbone_pickle_loads_bit_exactly(tmp_path, running_stats):
    src = _randomize(_tiny_bottleneck_resnet("FrozenBN"), seed=0)
    blobs = _c2_blobs(src.state_dict(), fpn=False, running_stats=running_stats)
    assert "res2_0_branch2a_bn_s" in blobs and "res4_5_branch2c_w" in blobs and "res5_0_branch1_w" in blobs
    blobs["fc1000_w"] = np.zeros((10, 128), np.float32)  # the ImageNet classifier, not part of a detector
    blobs["fc1000_b"] = np.zeros((10,), np.float32)
    path = _dump(tmp_path / "R-50.pkl", blobs)  # a bare {blob: array} dict, as in ImageNetPretrained/MSRA

    dst = _randomize(_Detector("FrozenBN"), seed=1)
    extra = DetectionCheckpointer(dst).load(path)
    assert extra["__author__"] == "Caffe2"
    loaded = dst.backbone.bottom_up.state_dict()
    for key, value in src.state_dict().items():
        if running_stats or not key.endswith(("running_mean", "running_var")):
            assert torch.equal(loaded[key], value), key
        elif key.endswith("running_mean"):  # AffineChannel files: identity statistics
            assert torch.equal(loaded[key], torch.zeros_like(value)), key
        else:
            assert torch.equal(loaded[key], torch.ones_like(value)), key


@pytest.mark.parametrize(
    "make_cfg, fpn",
    [(tiny_mask_rcnn_fpn, True), (tiny_mask_rcnn_c4, False), (tiny_keypoint_rcnn_fpn, True)],
    ids=["mask_rcnn_fpn", "mask_rcnn_c4", "keypoint_rcnn_fpn"],
)
def test_detectron1_model_file_loads_bit_exactly(tmp_path, make_cfg, fpn):
    torch.manual_seed(0)
    src = _randomize(instantiate(make_cfg()), seed=0)
    blobs = _c2_blobs(src.state_dict(), fpn=fpn)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros_like(blobs["res2_0_branch2a_w"])  # solver state
    blobs["lr"], blobs["iter"] = np.float32(0.02), 90000  # scalars of the solver, not weights
    path = _dump(tmp_path / "model_final.pkl", {"blobs": blobs, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"})

    dst = _randomize(instantiate(make_cfg()), seed=1)
    DetectionCheckpointer(dst).load(path)
    loaded = dst.state_dict()
    assert set(loaded) == set(src.state_dict())
    for key, value in src.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # Detectron1's background row 0 became detectron2's last row.
    cls = loaded["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls[-1], torch.from_numpy(blobs["cls_score_w"][0]))


def test_file_with_blobs_and_author_is_converted(tmp_path):
    src = _randomize(_tiny_bottleneck_resnet("FrozenBN"), seed=0)
    blobs = _c2_blobs(src.state_dict(), fpn=False)
    path = _dump(tmp_path / "model.pkl", {"blobs": blobs, "__author__": "Detectron"})
    dst = _randomize(_Detector("FrozenBN"), seed=1)
    DetectionCheckpointer(dst).load(path)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.backbone.bottom_up.state_dict()[key], value), key


def test_blobs_that_are_not_a_dict_are_refused(tmp_path):
    path = _dump(tmp_path / "bad.pkl", {"blobs": [1, 2]})
    with pytest.raises(ValueError, match=r"bad\.pkl.*'blobs'"):
        DetectionCheckpointer(_Detector("FrozenBN")).load(path)


def test_ambiguous_converted_name_raises_naming_the_blob():
    model = {"a.res2.0.conv1.weight": torch.zeros(1), "b.res2.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"res2_0_branch2a_w.*a\.res2\.0\.conv1\.weight.*b\.res2"):
        align_and_update_state_dicts(model, {"res2_0_branch2a_w": np.zeros(1)}, c2_conversion=True)


def test_detectron2_url_loads_through_the_model_zoo_handler(tmp_path, monkeypatch):
    """``detectron2://`` resolves to detectron2's download URL through iopath; the download is faked."""
    from iopath.common.file_io import HTTPURLHandler

    src = _randomize(_tiny_bottleneck_resnet("FrozenBN"), seed=0)
    local = _dump(tmp_path / "R-50.pkl", _c2_blobs(src.state_dict(), fpn=False, running_stats=False))
    fetched = []

    def fake_download(self, path, force=False, **kwargs):
        fetched.append(path)
        return local

    monkeypatch.setattr(HTTPURLHandler, "_get_local_path", fake_download)
    dst = _randomize(_Detector("FrozenBN"), seed=1)
    DetectionCheckpointer(dst).load("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    assert fetched == ["https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"]
    key = "res3.0.conv2.weight"
    assert torch.equal(dst.backbone.bottom_up.state_dict()[key], src.state_dict()[key])
