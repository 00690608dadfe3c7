"""Name conversion and matching for checkpoints whose names do not follow the model's module tree.

Two kinds of files need it:

* Caffe2 / Detectron1 weights (``detectron2://ImageNetPretrained/MSRA/R-50.pkl``, Detectron1 ``model_final.pkl``
  with a ``blobs`` dict) use flat blob names such as ``res2_0_branch2a_w`` or ``res_conv1_bn_s``.
  :func:`convert_c2_detectron_names` renames them to detectron2's names (``res2.0.conv1.weight``,
  ``stem.conv1.norm.weight``) and moves Detectron1's background class (first) to detectron2's place (last).
* Files marked ``"matching_heuristics": True`` (torchvision or pycls conversions, bare ``{name: array}`` pickles)
  carry names relative to some sub-module. :func:`align_and_update_state_dicts` matches each model parameter to
  the checkpoint name that is its longest dot-separated suffix, e.g. ``backbone.bottom_up.res2.0.conv1.weight``
  ← ``res2.0.conv1.weight``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "align_and_update_state_dicts",
    "convert_basic_c2_names",
    "convert_c2_detectron_names",
    "looks_like_c2_names",
]

logger = logging.getLogger(__name__)

# Blob name prefix of the ImageNet classifier of MSRA / FAIR backbones: never part of a detector.
_C2_CLASSIFIER_PREFIX = "fc1000_"

# Suffix rewrites applied after "_" became ".": Caffe2 batch-norm / group-norm blob names -> ``norm.*``.
_NORM_SUFFIXES = (
    (r"bn\.s$", "norm.weight"),
    (r"bn\.bias$", "norm.bias"),
    (r"bn\.rm$", "norm.running_mean"),
    (r"bn\.running\.mean$", "norm.running_mean"),
    (r"bn\.riv$", "norm.running_var"),
    (r"bn\.running\.var$", "norm.running_var"),
    (r"bn\.gamma$", "norm.weight"),
    (r"bn\.beta$", "norm.bias"),
    (r"gn\.s$", "norm.weight"),
    (r"gn\.bias$", "norm.bias"),
)


def looks_like_c2_names(keys: Sequence[str]) -> bool:
    """Whether a bare ``{name: array}`` pickle holds Caffe2 blob names: they never contain a dot."""
    return len(keys) > 0 and not any("." in k for k in keys)


def convert_basic_c2_names(original_keys: Sequence[str]) -> list[str]:
    """Rename Caffe2 backbone blobs to detectron2 names (same order as ``original_keys``).

    ``conv1_w`` → ``stem.conv1.weight``, ``res_conv1_bn_s`` → ``stem.conv1.norm.weight``,
    ``res3_1_branch2b_bn_b`` → ``res3.1.conv2.norm.bias``, ``res2_0_branch1_w`` → ``res2.0.shortcut.weight``.
    Head names only get the generic part (``_`` → ``.``, ``_w``/``_b`` → ``.weight``/``.bias``, norms).
    """
    keys = [{"pred_b": "linear_b", "pred_w": "linear_w"}.get(k, k) for k in original_keys]
    keys = [k.replace("_", ".") for k in keys]
    keys = [re.sub(r"\.b$", ".bias", k) for k in keys]
    keys = [re.sub(r"\.w$", ".weight", k) for k in keys]
    for pattern, replacement in _NORM_SUFFIXES:
        keys = [re.sub(pattern, replacement, k) for k in keys]
    # The stem's conv is "conv1" and its norm "res_conv1_bn"; prefix both with "stem." so that they cannot be
    # confused with a "conv1" of some head.
    keys = [re.sub(r"^res\.conv1\.norm\.", "conv1.norm.", k) for k in keys]
    keys = [re.sub(r"^conv1\.", "stem.conv1.", k) for k in keys]
    # Residual blocks: branch1 is the projection shortcut, branch2a/b/c the three convs.
    keys = [k.replace(".branch1.", ".shortcut.") for k in keys]
    keys = [k.replace(".branch2a.", ".conv1.") for k in keys]
    keys = [k.replace(".branch2b.", ".conv2.") for k in keys]
    keys = [k.replace(".branch2c.", ".conv3.") for k in keys]
    # DensePose heads (the "_" → "." step above split their names).
    keys = [re.sub(r"^body\.conv\.fcn", "body_conv_fcn", k) for k in keys]
    keys = [k.replace("AnnIndex.lowres", "ann_index_lowres") for k in keys]
    keys = [k.replace("Index.UV.lowres", "index_uv_lowres") for k in keys]
    keys = [k.replace("U.lowres", "u_lowres") for k in keys]
    keys = [k.replace("V.lowres", "v_lowres") for k in keys]
    return keys


def _fpn_name(name: str) -> str:
    """``fpn.inner.res4.5.sum.lateral.weight`` → ``fpn_lateral4.weight``; ``fpn.res4.5.sum.weight`` →
    ``fpn_output4.weight`` (``.norm`` kept for GN variants). Other names are returned unchanged."""
    parts = name.split(".")
    norm = ".norm" if "norm" in parts else ""
    if name.startswith("fpn.inner.res"):
        return f"fpn_lateral{int(parts[2][len('res') :])}{norm}.{parts[-1]}"
    if name.startswith("fpn.res"):
        return f"fpn_output{int(parts[1][len('res') :])}{norm}.{parts[-1]}"
    return name


def _convert_head_names(keys: list[str]) -> list[str]:
    """Detectron1 RPN, FPN, box, mask and keypoint head names (after :func:`convert_basic_c2_names`)."""
    # RPN: Detectron1 defines the FPN RPN head on level 2 ("fpn2") and shares it with the other levels.
    rpn = (
        ("conv.rpn.fpn2", "proposal_generator.rpn_head.conv"),
        ("conv.rpn", "proposal_generator.rpn_head.conv"),
        ("rpn.bbox.pred.fpn2", "proposal_generator.rpn_head.anchor_deltas"),
        ("rpn.cls.logits.fpn2", "proposal_generator.rpn_head.objectness_logits"),
        ("rpn.bbox.pred", "proposal_generator.rpn_head.anchor_deltas"),
        ("rpn.cls.logits", "proposal_generator.rpn_head.objectness_logits"),
    )
    for old, new in rpn:
        keys = [k.replace(old, new) for k in keys]
    # Fast R-CNN box head and predictor.
    box = (
        (r"^bbox\.pred", "bbox_pred"),
        (r"^cls\.score", "cls_score"),
        (r"^fc6\.", "box_head.fc1."),
        (r"^fc7\.", "box_head.fc2."),
        (r"^head\.conv", "box_head.conv"),  # 4conv1fc heads: head_conv1_w, head_conv1_gn_s
    )
    for pattern, replacement in box:
        keys = [re.sub(pattern, replacement, k) for k in keys]
    keys = [_fpn_name(k) for k in keys]
    # Mask head: StandardROIHeads ("_[mask]_fcn1_w") and Res5ROIHeads ("conv5_mask_w").
    keys = [k.replace(".[mask].fcn", "mask_head.mask_fcn") for k in keys]
    keys = [re.sub(r"^\.mask\.fcn", "mask_head.mask_fcn", k) for k in keys]
    keys = [k.replace("mask.fcn.logits", "mask_head.predictor") for k in keys]
    keys = [k.replace("conv5.mask", "mask_head.deconv") for k in keys]
    # Keypoint head: its convs are plainly "conv_fcnX".
    keys = [k.replace("conv.fcn", "roi_heads.keypoint_head.conv_fcn") for k in keys]
    keys = [k.replace("kps.score.lowres", "roi_heads.keypoint_head.score_lowres") for k in keys]
    keys = [k.replace("kps.score.", "roi_heads.keypoint_head.score.") for k in keys]
    return keys


def _cat_rows(parts: Sequence[Any]) -> Any:
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts)


def convert_c2_detectron_names(weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Rename Caffe2 / Detectron1 blobs to detectron2 names and adapt the class-specific predictors.

    Detectron1 puts the background class first; detectron2 puts it last in ``cls_score`` and has no
    background output in ``bbox_pred`` and the mask predictor. So ``cls_score`` rows are rotated (row 0 goes
    last), the first 4 rows of ``bbox_pred`` and the first channel of the mask predictor are dropped.
    The ImageNet classifier (``fc1000_*``) and solver state (``*_momentum``) are dropped.

    Args:
        weights: ``{blob name: ndarray or tensor}``.

    Returns:
        ``(new_weights, new_name -> original blob name)``.

    Raises:
        ValueError: two blobs would get the same detectron2 name (names both).
    """
    dropped = sorted(k for k in weights if k.startswith(_C2_CLASSIFIER_PREFIX) or k.endswith("_momentum"))
    if dropped:
        logger.info("Dropping Caffe2 blobs that belong to no detector: %s", ", ".join(dropped))
    original_keys = sorted(k for k in weights if k not in set(dropped))
    new_keys = _convert_head_names(convert_basic_c2_names(original_keys))
    new_to_original: dict[str, str] = {}
    for orig, new in zip(original_keys, new_keys, strict=True):
        if new in new_to_original:
            raise ValueError(
                f"Caffe2 blobs {new_to_original[new]!r} and {orig!r} both convert to the detectron2 name {new!r}."
            )
        new_to_original[new] = orig

    new_weights: dict[str, Any] = {}
    for new, orig in new_to_original.items():
        value = weights[orig]
        if new.startswith(("bbox_pred.", "mask_head.predictor.")):
            background = 4 if new.startswith("bbox_pred.") else 1
            new_weights[new] = value[background:]
            logger.info(
                "Dropped the background-class rows of %s: shape %s -> %s.",
                orig,
                tuple(value.shape),
                tuple(new_weights[new].shape),
            )
        elif new.startswith("cls_score."):
            new_weights[new] = _cat_rows([value[1:], value[:1]])
            logger.info("Moved the background class of %s from index 0 to index %d.", orig, value.shape[0] - 1)
        else:
            new_weights[new] = value
    return new_weights, new_to_original


def _shape_fits(model_value: Any, ckpt_value: Any) -> bool:
    """Whether a checkpoint value has the model value's shape (True when either has no shape to compare)."""
    model_shape, ckpt_shape = getattr(model_value, "shape", None), getattr(ckpt_value, "shape", None)
    return model_shape is None or ckpt_shape is None or tuple(model_shape) == tuple(ckpt_shape)


def _is_suffix(model_key: str, ckpt_key: str) -> bool:
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def align_and_update_state_dicts(
    model_state_dict: Mapping[str, Any], ckpt_state_dict: Mapping[str, Any], c2_conversion: bool = False
) -> dict[str, Any]:
    """Rename checkpoint entries to the model names they match by longest dot-separated suffix.

    Args:
        model_state_dict: the model's ``state_dict()`` (only the names are used).
        ckpt_state_dict: ``{name: tensor or array}`` from the checkpoint.
        c2_conversion: first convert Caffe2 / Detectron1 blob names (:func:`convert_c2_detectron_names`).

    Returns:
        A new dict keyed by model names for the matched entries. Checkpoint entries that match no model name
        keep their own names, so the loader reports them as unexpected; their model names are then reported as
        missing. When one checkpoint name is the longest suffix of several model names, only those of its
        shape are candidates; other shape mismatches are left for the loader to report.

    Raises:
        ValueError: one checkpoint name is the longest suffix of several model names of its shape (an
            ambiguity that renaming cannot resolve); names the checkpoint entry and the model names.
    """
    original_names: dict[str, str] = {}
    if c2_conversion:
        ckpt_state_dict, original_names = convert_c2_detectron_names(ckpt_state_dict)
    ckpt_keys = sorted(ckpt_state_dict, key=len, reverse=True)
    chosen: dict[str, str] = {}  # model key -> checkpoint key
    for model_key in model_state_dict:
        for ckpt_key in ckpt_keys:  # longest first: the first hit is the longest suffix
            if _is_suffix(model_key, ckpt_key):
                chosen[model_key] = ckpt_key
                break
    claimants: dict[str, list[str]] = {}
    for model_key, ckpt_key in chosen.items():
        claimants.setdefault(ckpt_key, []).append(model_key)
    result: dict[str, Any] = {}
    used: set[str] = set()
    for ckpt_key, model_keys in claimants.items():
        if len(model_keys) > 1 and ckpt_key in model_keys:
            model_keys = [ckpt_key]  # an exact name match wins over suffix matches
        shown = f"{ckpt_key!r}" + (f" (Caffe2 blob {original_names[ckpt_key]!r})" if ckpt_key in original_names else "")
        if len(model_keys) > 1:
            # as in detectron2, a suffix match of another shape is no match (e.g. an MAE ViT's final
            # "norm.weight" [768] vs the [256] norms of ViTDet's pyramid): keep the claimants that fit
            model_keys = [k for k in model_keys if _shape_fits(model_state_dict[k], ckpt_state_dict[ckpt_key])]
            if not model_keys:
                continue  # left under its own name: reported as unexpected
        if len(model_keys) > 1:
            raise ValueError(
                f"Ambiguous checkpoint key {shown}: it is the longest name suffix of several model keys "
                f"{sorted(model_keys)}, so it cannot be matched to one of them. Rename the checkpoint entries "
                "to the model's full names."
            )
        result[model_keys[0]] = ckpt_state_dict[ckpt_key]
        used.add(ckpt_key)
        if model_keys[0] != ckpt_key:
            logger.debug("Matched checkpoint key %s to model key '%s'.", shown, model_keys[0])
    unmatched = [k for k in ckpt_state_dict if k not in used and k not in result]
    for ckpt_key in unmatched:
        result[ckpt_key] = ckpt_state_dict[ckpt_key]
    logger.info(
        "Matched %d of %d checkpoint entries to model names by name suffix%s; %d match no model name.",
        len(used),
        len(ckpt_state_dict),
        " after Caffe2 name conversion" if c2_conversion else "",
        len(unmatched),
    )
    return result
