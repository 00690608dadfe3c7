"""Load torchvision's ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` weights into libdet's
``configs/common/models/mask_rcnn_fpn.py`` (detectron2 names).

The two are the same network; the state dicts differ in names and in the class layout of the box and mask
predictors: torchvision puts the background at class 0 and predicts a box for it, detectron2 puts it last
and predicts none. Torchvision label ``j`` (``1 <= j < num_classes``) is libdet class ``j - 1``, so a
91-class torchvision model becomes a ``num_classes=90`` libdet model.

To reproduce torchvision's outputs, build the libdet model with
``configs/common/models/mask_rcnn_fpn_torchvision.py`` (RGB input normalised with ImageNet mean / std,
stride in the 3x3 convs, ``ROIAlign`` with ``aligned=False`` and 2 samples, 90 classes) and load with
:func:`load_torchvision_maskrcnn`, which also rounds the anchors as torchvision does. Given the same
already-resized image (torchvision's transform does not resize an 800x1333 image), the backbone and FPN
features agree to float rounding and the detections closely. Differences that remain:

* torchvision drops final boxes smaller than 0.01 px and RPN proposals smaller than 1e-3 px (libdet: empty
  ones); box-to-FPN-level assignment uses eps 1e-6 vs 1e-8 in the log.
* torchvision pastes masks by bilinear ``interpolate`` of the mask padded by one cell into the rounded box and
  returns soft masks; libdet samples the 28x28 mask at every pixel centre of the box and thresholds at 0.5.
  Pasted masks therefore differ by about a pixel along their border.
* torchvision's ``COCO_V1`` checkpoint sets ``eps=0`` in every ``FrozenBatchNorm2d``; libdet uses 1e-5. Set
  ``eps=0.0`` on libdet's ``FrozenBatchNorm2d`` modules (see :func:`load_torchvision_maskrcnn`) to match it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["convert_torchvision_maskrcnn_state_dict", "load_torchvision_maskrcnn"]

_FPN_LEVELS = {"0": 2, "1": 3, "2": 4, "3": 5}

# Renames that need no class re-ordering; the first match wins.
_RENAMES: list[tuple[str, str]] = [
    (r"backbone\.body\.conv1\.(\w+)", r"backbone.bottom_up.stem.conv1.\1"),
    (r"backbone\.body\.bn1\.(\w+)", r"backbone.bottom_up.stem.conv1.norm.\1"),
    (r"backbone\.body\.layer([1-4])\.(\d+)\.conv([1-3])\.(\w+)", r"backbone.bottom_up.res{L}.\2.conv\3.\4"),
    (r"backbone\.body\.layer([1-4])\.(\d+)\.bn([1-3])\.(\w+)", r"backbone.bottom_up.res{L}.\2.conv\3.norm.\4"),
    (r"backbone\.body\.layer([1-4])\.(\d+)\.downsample\.0\.(\w+)", r"backbone.bottom_up.res{L}.\2.shortcut.\3"),
    (r"backbone\.body\.layer([1-4])\.(\d+)\.downsample\.1\.(\w+)", r"backbone.bottom_up.res{L}.\2.shortcut.norm.\3"),
    (r"backbone\.fpn\.inner_blocks\.([0-3])\.0\.(\w+)", r"backbone.fpn_lateral{F}.\2"),
    (r"backbone\.fpn\.layer_blocks\.([0-3])\.0\.(\w+)", r"backbone.fpn_output{F}.\2"),
    (r"rpn\.head\.conv\.0\.0\.(\w+)", r"proposal_generator.rpn_head.conv.\1"),
    (r"rpn\.head\.cls_logits\.(\w+)", r"proposal_generator.rpn_head.objectness_logits.\1"),
    (r"rpn\.head\.bbox_pred\.(\w+)", r"proposal_generator.rpn_head.anchor_deltas.\1"),
    (r"roi_heads\.box_head\.fc6\.(\w+)", r"roi_heads.box_head.fc1.\1"),
    (r"roi_heads\.box_head\.fc7\.(\w+)", r"roi_heads.box_head.fc2.\1"),
    (r"roi_heads\.mask_head\.(\d+)\.0\.(\w+)", r"roi_heads.mask_head.mask_fcn{M}.\2"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(\w+)", r"roi_heads.mask_head.deconv.\1"),
]


def _rename(name: str) -> str | None:
    """detectron2 name of a torchvision key whose value is copied unchanged, or None."""
    for pattern, template in _RENAMES:
        m = re.fullmatch(pattern, name)
        if m:
            out = m.expand(template)
            if "{L}" in out:  # torchvision layer1..4 = detectron2 res2..5
                out = out.replace("{L}", str(int(m.group(1)) + 1))
            if "{F}" in out:  # FPN block i serves ResNet stage i + 2
                out = out.replace("{F}", str(_FPN_LEVELS[m.group(1)]))
            if "{M}" in out:  # mask_head.0 = mask_fcn1
                out = out.replace("{M}", str(int(m.group(1)) + 1))
            return out
    return None


def convert_torchvision_maskrcnn_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision Mask R-CNN (or Faster R-CNN) R50-FPN ``state_dict`` to libdet / detectron2 keys.

    Box and mask predictors are re-ordered from torchvision's ``(background, class 1, ..., class K)`` to
    detectron2's ``(class 1, ..., class K[, background])``: the class logits move the background row last,
    the class-specific box deltas and mask logits lose the background's rows. ``num_batches_tracked``
    counters (from a model built with trainable BatchNorm) are dropped.

    Args:
        state_dict: torchvision model's ``state_dict()`` (tensors on any device).

    Returns:
        libdet state dict for ``mask_rcnn_fpn.py`` with ``num_classes = K``, where ``K + 1`` is
        torchvision's ``num_classes``.

    Raises:
        ValueError: a key that is not part of a torchvision R50-FPN Mask / Faster R-CNN (names it), or a
            box predictor whose shapes do not match each other.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        new = _rename(name)
        if new is not None:
            out[new] = value
            continue
        m = re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", name)
        if m:
            layer, param = m.groups()
            if layer == "cls_score":  # background logit: first -> last
                out[f"roi_heads.box_predictor.cls_score.{param}"] = torch.cat([value[1:], value[:1]])
            else:  # 4 deltas per class; the background's are never used
                out[f"roi_heads.box_predictor.bbox_pred.{param}"] = value[4:]
            continue
        m = re.fullmatch(r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)", name)
        if m:
            out[f"roi_heads.mask_head.predictor.{m.group(1)}"] = value[1:]
            continue
        raise ValueError(f"convert_torchvision_maskrcnn_state_dict: {name!r} is not a key of a torchvision R50-FPN.")
    cls = out.get("roi_heads.box_predictor.cls_score.weight")
    box = out.get("roi_heads.box_predictor.bbox_pred.weight")
    if cls is not None and box is not None and box.shape[0] != 4 * (cls.shape[0] - 1):
        raise ValueError(
            "convert_torchvision_maskrcnn_state_dict: roi_heads.box_predictor.bbox_pred has "
            f"{box.shape[0] + 4} rows for {cls.shape[0]} classes; expected 4 per class (class-specific boxes)."
        )
    return out


def _round_anchors_like_torchvision(model: nn.Module) -> None:
    """Round every cell anchor of ``model.proposal_generator.anchor_generator`` to whole pixels, as
    torchvision's ``AnchorGenerator`` does (e.g. a 32 px anchor of ratio 0.5 is 46 x 22, not 45.25 x 22.63)."""
    generator = getattr(getattr(model, "proposal_generator", None), "anchor_generator", None)
    if generator is None or not hasattr(generator, "cell_anchors"):
        raise ValueError(
            "load_torchvision_maskrcnn: `model` has no proposal_generator.anchor_generator.cell_anchors; "
            "expected a GeneralizedRCNN with an RPN."
        )
    for anchors in generator.cell_anchors:
        anchors.copy_(anchors.round())


@torch.no_grad()
def load_torchvision_maskrcnn(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, frozen_bn_eps: float | None = None
) -> None:
    """Load torchvision Mask / Faster R-CNN R50-FPN weights into a libdet ``GeneralizedRCNN`` (in place).

    Converts the keys (:func:`convert_torchvision_maskrcnn_state_dict`), loads them strictly (a Faster
    R-CNN checkpoint needs a model without mask branch), and rounds the RPN's cell anchors to whole pixels
    as torchvision does, so the model matches torchvision's proposals.

    Args:
        model: built from ``configs/common/models/mask_rcnn_fpn_torchvision.py`` (with ``num_classes``
            one less than torchvision's).
        state_dict: torchvision model's ``state_dict()``.
        frozen_bn_eps: if given, the ``eps`` of every ``FrozenBatchNorm2d`` (0.0 for torchvision's
            ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, which was trained with eps 0).

    Raises:
        ValueError: unknown torchvision keys, or keys / shapes that do not match ``model`` (names them).
    """
    from libdet.layers import FrozenBatchNorm2d

    converted = convert_torchvision_maskrcnn_state_dict(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(converted))
        if converted[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            "load_torchvision_maskrcnn: the torchvision weights do not fit the model "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatch {mismatched[:5]}). "
            "Build it from configs/common/models/mask_rcnn_fpn_torchvision.py with num_classes = "
            "torchvision's num_classes - 1."
        )
    model.load_state_dict(converted, strict=True)
    _round_anchors_like_torchvision(model)
    if frozen_bn_eps is not None:
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = frozen_bn_eps
