"""Convert DETR weights between libdet, the official release and Hugging Face ``DetrForObjectDetection``.

Layouts (``state_dict`` keys):

- **libdet** (this project's :class:`~detr.DETR`): ``backbone.stem.conv1.*``, ``backbone.res2.0.conv1.norm.*``
  (detectron2's ResNet names), ``transformer.encoder.layers.N.self_attn.in_proj_weight`` (q, k, v stacked),
  ``transformer.decoder.layers.N.multihead_attn.*``, ``input_proj``, ``query_embed``, ``class_embed``,
  ``bbox_embed.layers.{0,1,2}``, ``position_embedding.{row,col}_embed`` (learned encoding only).
- **official** (facebookresearch/detr ``detr-r50-e632da11.pth``: ``{"model": state_dict, ...}``): the same
  transformer and heads, a torchvision ResNet under ``backbone.0.body.`` (``conv1``, ``bn1``,
  ``layer1.0.downsample.0``) and the learned encoding under ``backbone.1.``.
- **Hugging Face** (``DetrForObjectDetection``): everything under ``model.`` except the heads
  (``class_labels_classifier``, ``bbox_predictor``); separate ``q_proj`` / ``k_proj`` / ``v_proj``; norms named
  ``self_attn_layer_norm`` / ``encoder_attn_layer_norm`` / ``final_layer_norm``; the backbone either timm's
  (torchvision names) or transformers' ``ResNetBackbone`` (``embedder.embedder.convolution``,
  ``encoder.stages.S.layers.B.layer.J.convolution``). Two generations of names exist: the hub files
  (transformers 4: ``model.backbone.conv_encoder.model.``, ``out_proj``, ``fc1``) and transformers 5 modules
  (``model.backbone.model.``, ``o_proj``, ``mlp.fc1``). Both are read; either can be written.

Panoptic models (official ``DETRsegm``, HF ``DetrForSegmentation``, libdet ``DETRSegm``) hold the detector under
``detr.`` and the mask head as ``bbox_attention.{q,k}_linear`` and ``mask_head.{lay1..5,gn1..5,adapter1..3,out_lay}``
(transformers 5: ``bbox_attention.{q,k}_proj``, ``mask_head.conv1.conv``, ``fpn_stages.N.refine.conv``, ...).

COCO checkpoints of the official release and the hub have 92 class rows: row ``i`` is COCO category id ``i`` (ids
0, 12, 26, ... are unused), row 91 is "no object". libdet numbers the 80 classes contiguously, so with
``coco_classes=True`` the rows are gathered to ``80 + 1`` (and scattered back when converting out; the unused
rows get weight 0 and bias -1e4, i.e. probability ~0). Panoptic checkpoints have 251 rows (COCO panoptic category
ids, 250 = "no object"), mapped to libdet's 133 + 1 with the category ids of the panoptic json.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

__all__ = [
    "COCO_UNUSED_LOGIT_BIAS",
    "coco_contiguous_to_id",
    "detect_layout",
    "hf_to_libdet",
    "libdet_to_hf",
    "libdet_to_official",
    "load_state_dict_file",
    "official_to_libdet",
    "panoptic_category_ids_from_json",
]

COCO_UNUSED_LOGIT_BIAS = -1e4
# (pattern, replacement string or function of the match)
_Rules = list[tuple[str, str | Callable[[re.Match], str]]]

# torchvision ResNet (official release, timm) <-> detectron2 ResNet (libdet); applied to the name after the prefix
_TORCHVISION_TO_D2: _Rules = [
    (r"^conv1\.weight$", "stem.conv1.weight"),
    (r"^bn1\.(\w+)$", r"stem.conv1.norm.\1"),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.(\w+)$", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.weight$", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.(\w+)$", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
]
_D2_TO_TORCHVISION: _Rules = [
    (r"^stem\.conv1\.weight$", "conv1.weight"),
    (r"^stem\.conv1\.norm\.(\w+)$", r"bn1.\1"),
    (r"^res(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
    (r"^res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
    (r"^res(\d)\.(\d+)\.shortcut\.weight$", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (r"^res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
]
# transformers' ResNetBackbone <-> detectron2 ResNet
_HF_RESNET_TO_D2: _Rules = [
    (r"^embedder\.embedder\.convolution\.weight$", "stem.conv1.weight"),
    (r"^embedder\.embedder\.normalization\.(\w+)$", r"stem.conv1.norm.\1"),
    (
        r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.weight$",
        lambda m: f"res{int(m[1]) + 2}.{m[2]}.shortcut.weight",
    ),
    (
        r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.(\w+)$",
        lambda m: f"res{int(m[1]) + 2}.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (
        r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.weight$",
        lambda m: f"res{int(m[1]) + 2}.{m[2]}.conv{int(m[3]) + 1}.weight",
    ),
    (
        r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.(\w+)$",
        lambda m: f"res{int(m[1]) + 2}.{m[2]}.conv{int(m[3]) + 1}.norm.{m[4]}",
    ),
]
_D2_TO_HF_RESNET: _Rules = [
    (r"^stem\.conv1\.weight$", "embedder.embedder.convolution.weight"),
    (r"^stem\.conv1\.norm\.(\w+)$", r"embedder.embedder.normalization.\1"),
    (
        r"^res(\d)\.(\d+)\.shortcut\.weight$",
        lambda m: f"encoder.stages.{int(m[1]) - 2}.layers.{m[2]}.shortcut.convolution.weight",
    ),
    (
        r"^res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$",
        lambda m: f"encoder.stages.{int(m[1]) - 2}.layers.{m[2]}.shortcut.normalization.{m[3]}",
    ),
    (
        r"^res(\d)\.(\d+)\.conv(\d)\.weight$",
        lambda m: f"encoder.stages.{int(m[1]) - 2}.layers.{m[2]}.layer.{int(m[3]) - 1}.convolution.weight",
    ),
    (
        r"^res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$",
        lambda m: f"encoder.stages.{int(m[1]) - 2}.layers.{m[2]}.layer.{int(m[3]) - 1}.normalization.{m[4]}",
    ),
]
# transformer and heads, Hugging Face (transformers 5 names, after _hf_to_v5) <-> libdet
_HF_TO_LIBDET: _Rules = [
    (r"^model\.encoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"transformer.encoder.layers.\1.self_attn.out_proj."),
    (r"^model\.encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.encoder.layers.\1.norm1."),
    (r"^model\.encoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.encoder.layers.\1.norm2."),
    (r"^model\.encoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"transformer.encoder.layers.\1.linear\2."),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"transformer.decoder.layers.\1.self_attn.out_proj."),
    (
        r"^model\.decoder\.layers\.(\d+)\.encoder_attn\.o_proj\.",
        r"transformer.decoder.layers.\1.multihead_attn.out_proj.",
    ),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"^model\.decoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^model\.decoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"transformer.decoder.layers.\1.linear\2."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder.norm."),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (r"^model\.position_embedding\.row_embeddings\.", "position_embedding.row_embed."),
    (r"^model\.position_embedding\.column_embeddings\.", "position_embedding.col_embed."),
]
_LIBDET_TO_HF: _Rules = [
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"model.encoder.layers.\1.self_attn.o_proj."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm1\.", r"model.encoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm2\.", r"model.encoder.layers.\1.final_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"model.encoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"model.decoder.layers.\1.self_attn.o_proj."),
    (
        r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.out_proj\.",
        r"model.decoder.layers.\1.encoder_attn.o_proj.",
    ),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"model.decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"model.decoder.layers.\1.encoder_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"model.decoder.layers.\1.final_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"model.decoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.decoder\.norm\.", "model.decoder.layernorm."),
    (r"^input_proj\.", "model.input_projection."),
    (r"^query_embed\.", "model.query_position_embeddings."),
    (r"^class_embed\.", "class_labels_classifier."),
    (r"^bbox_embed\.", "bbox_predictor."),
    (r"^position_embedding\.row_embed\.", "model.position_embedding.row_embeddings."),
    (r"^position_embedding\.col_embed\.", "model.position_embedding.column_embeddings."),
]
# transformers 4 (hub files) <-> transformers 5 module names; the v4 learned encoding sat inside the backbone
_HF_V4_TO_V5: _Rules = [
    (r"^model\.backbone\.conv_encoder\.", "model.backbone."),
    (r"^model\.backbone\.position_embedding\.", "model.position_embedding."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.layers\.(\d+)\.fc(\d)\.", r".layers.\1.mlp.fc\2."),
]
_HF_V5_TO_V4: _Rules = [
    (r"^model\.backbone\.model\.", "model.backbone.conv_encoder.model."),
    (r"^model\.position_embedding\.", "model.backbone.position_embedding."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.layers\.(\d+)\.mlp\.fc(\d)\.", r".layers.\1.fc\2."),
]


def _apply_rules(name: str, rules: _Rules, *, all_rules: bool = False) -> str | None:
    """``name`` rewritten by the first matching rule (every matching rule with ``all_rules``); None if none
    matched."""
    matched = False
    for pattern, repl in rules:
        new, count = re.subn(pattern, repl, name)
        if count:
            name, matched = new, True
            if not all_rules:
                break
    return name if matched else None


def _rename_backbone(
    state_dict: dict[str, torch.Tensor], prefix: str, new_prefix: str, rules: _Rules
) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        if not k.startswith(prefix):
            continue
        if k.endswith("num_batches_tracked"):
            continue  # frozen BatchNorm has no counter
        new = _apply_rules(k[len(prefix) :], rules)
        if new is None:
            raise KeyError(f"DETR weight conversion: backbone key {k!r} has no counterpart.")
        out[new_prefix + new] = v
    return out


def coco_contiguous_to_id() -> list[int]:
    """COCO category id of each of libdet's 80 contiguous COCO classes."""
    from libdet.data.datasets.builtin_meta import COCO_CATEGORIES

    return [c["id"] for c in COCO_CATEGORIES if c.get("isthing", 1)]


def _class_rows(num_rows: int, key: str, panoptic_category_ids: list[int] | None) -> tuple[list[int], int]:
    """Rows of the release layout that make libdet's contiguous rows (no-object last), and the release row count."""
    if num_rows in (92, 81):  # COCO detection: ids 0-90 + no object <-> 80 + 1
        return coco_contiguous_to_id() + [91], 92
    if num_rows in (251, 134):  # COCO panoptic: ids 0-249 + no object <-> 133 + 1
        if panoptic_category_ids is None or len(panoptic_category_ids) != 133:
            raise ValueError(
                f"DETR weight conversion: {key} has {num_rows} rows (COCO panoptic); pass panoptic_category_ids, the "
                "133 category ids of the panoptic json (see panoptic_category_ids_from_json)."
            )
        return sorted(panoptic_category_ids) + [250], 251
    raise ValueError(
        f"DETR weight conversion: {key} has {num_rows} rows; a COCO checkpoint has 92 (detection) or 251 (panoptic), "
        "a libdet COCO model 81 or 134. Pass coco_classes=False for other datasets."
    )


def _gather_coco_rows(state_dict: dict[str, torch.Tensor], key: str, panoptic_category_ids=None) -> None:
    """Release rows (COCO id order + no-object) -> libdet rows (contiguous order + no-object), in place."""
    weight = state_dict[f"{key}.weight"]
    rows, release_rows = _class_rows(weight.shape[0], key, panoptic_category_ids)
    if weight.shape[0] != release_rows:
        raise ValueError(f"DETR weight conversion: {key} has {weight.shape[0]} rows, expected {release_rows}.")
    for suffix in ("weight", "bias"):
        state_dict[f"{key}.{suffix}"] = state_dict[f"{key}.{suffix}"][rows].clone()


def _scatter_coco_rows(state_dict: dict[str, torch.Tensor], key: str, panoptic_category_ids=None) -> None:
    """libdet rows (contiguous + no-object) -> release rows (COCO id order + no-object), in place; rows of unused
    ids get weight 0 and bias ``COCO_UNUSED_LOGIT_BIAS``."""
    weight, bias = state_dict[f"{key}.weight"], state_dict[f"{key}.bias"]
    rows, release_rows = _class_rows(weight.shape[0], key, panoptic_category_ids)
    if weight.shape[0] != len(rows):
        raise ValueError(f"DETR weight conversion: {key} has {weight.shape[0]} rows, expected {len(rows)}.")
    new_weight = weight.new_zeros((release_rows, weight.shape[1]))
    new_bias = bias.new_full((release_rows,), COCO_UNUSED_LOGIT_BIAS)
    new_weight[rows] = weight
    new_bias[rows] = bias
    state_dict[f"{key}.weight"], state_dict[f"{key}.bias"] = new_weight, new_bias


def panoptic_category_ids_from_json(path: str) -> list[int]:
    """Category ids of a COCO panoptic json (``panoptic_val2017.json``), for ``panoptic_category_ids``."""
    import json

    from libdet.utils.file_io import PathManager

    with PathManager.open(path) as f:
        return sorted(c["id"] for c in json.load(f)["categories"])


_SEGM_HEAD_PREFIXES = ("bbox_attention.", "mask_head.")
# the mask head: official / hub (transformers 4) names <-> transformers 5 names
_SEGM_V4_TO_V5: _Rules = [
    (r"^bbox_attention\.q_linear\.", "bbox_attention.q_proj."),
    (r"^bbox_attention\.k_linear\.", "bbox_attention.k_proj."),
    (r"^mask_head\.lay1\.", "mask_head.conv1.conv."),
    (r"^mask_head\.gn1\.", "mask_head.conv1.norm."),
    (r"^mask_head\.lay2\.", "mask_head.conv2.conv."),
    (r"^mask_head\.gn2\.", "mask_head.conv2.norm."),
    (r"^mask_head\.adapter(\d)\.", lambda m: f"mask_head.fpn_stages.{int(m[1]) - 1}.fpn_adapter."),
    (r"^mask_head\.lay([345])\.", lambda m: f"mask_head.fpn_stages.{int(m[1]) - 3}.refine.conv."),
    (r"^mask_head\.gn([345])\.", lambda m: f"mask_head.fpn_stages.{int(m[1]) - 3}.refine.norm."),
    (r"^mask_head\.out_lay\.", "mask_head.output_conv."),
]
_SEGM_V5_TO_V4: _Rules = [
    (r"^bbox_attention\.q_proj\.", "bbox_attention.q_linear."),
    (r"^bbox_attention\.k_proj\.", "bbox_attention.k_linear."),
    (r"^mask_head\.conv1\.conv\.", "mask_head.lay1."),
    (r"^mask_head\.conv1\.norm\.", "mask_head.gn1."),
    (r"^mask_head\.conv2\.conv\.", "mask_head.lay2."),
    (r"^mask_head\.conv2\.norm\.", "mask_head.gn2."),
    (r"^mask_head\.fpn_stages\.(\d)\.fpn_adapter\.", lambda m: f"mask_head.adapter{int(m[1]) + 1}."),
    (r"^mask_head\.fpn_stages\.(\d)\.refine\.conv\.", lambda m: f"mask_head.lay{int(m[1]) + 3}."),
    (r"^mask_head\.fpn_stages\.(\d)\.refine\.norm\.", lambda m: f"mask_head.gn{int(m[1]) + 3}."),
    (r"^mask_head\.output_conv\.", "mask_head.out_lay."),
]


def _split_segmentation(state_dict: dict[str, torch.Tensor]):
    """(detection part without its "detr." prefix, mask-head part) of a segmentation state_dict, or None."""
    if not any(k.startswith("detr.") for k in state_dict):
        return None
    detection = {k[len("detr.") :]: v for k, v in state_dict.items() if k.startswith("detr.")}
    head = {k: v for k, v in state_dict.items() if not k.startswith("detr.")}
    unknown = [k for k in head if not k.startswith(_SEGM_HEAD_PREFIXES)]
    if unknown:
        raise KeyError(f"DETR weight conversion: segmentation keys {unknown[:5]} are neither detr.* nor the mask head.")
    return detection, head


def _join_segmentation(detection: dict[str, torch.Tensor], head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**{"detr." + k: v for k, v in detection.items()}, **head}


def official_to_libdet(
    state_dict: dict[str, torch.Tensor], *, coco_classes: bool = True, panoptic_category_ids: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Official-release ``state_dict`` (the checkpoint's "model"; ``DETR`` or panoptic ``DETRsegm``) -> libdet
    ``DETR`` / ``DETRSegm`` ``state_dict`` (the mask head keeps its names)."""
    parts = _split_segmentation(state_dict)
    if parts is not None:
        detection = official_to_libdet(parts[0], coco_classes=coco_classes, panoptic_category_ids=panoptic_category_ids)
        return _join_segmentation(detection, parts[1])
    out = _rename_backbone(state_dict, "backbone.0.body.", "backbone.", _TORCHVISION_TO_D2)
    for k, v in state_dict.items():
        if k.startswith("backbone.0.body."):
            continue
        if k.startswith("backbone.1."):  # learned positional encoding
            out["position_embedding." + k[len("backbone.1.") :]] = v
        elif k.split(".")[0] in ("transformer", "input_proj", "query_embed", "class_embed", "bbox_embed"):
            out[k] = v
        else:
            raise KeyError(f"DETR weight conversion: official key {k!r} has no libdet counterpart.")
    if coco_classes:
        _gather_coco_rows(out, "class_embed", panoptic_category_ids)
    return out


def libdet_to_official(
    state_dict: dict[str, torch.Tensor], *, coco_classes: bool = True, panoptic_category_ids: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """libdet ``DETR`` / ``DETRSegm`` ``state_dict`` -> official-release ``state_dict`` (save as ``{"model": ...}``)."""
    parts = _split_segmentation(state_dict)
    if parts is not None:
        detection = libdet_to_official(parts[0], coco_classes=coco_classes, panoptic_category_ids=panoptic_category_ids)
        return _join_segmentation(detection, parts[1])
    out = _rename_backbone(state_dict, "backbone.", "backbone.0.body.", _D2_TO_TORCHVISION)
    for k, v in state_dict.items():
        if k.startswith("backbone."):
            continue
        if k.startswith("position_embedding."):
            out["backbone.1." + k[len("position_embedding.") :]] = v
        else:
            out[k] = v
    if coco_classes:
        _scatter_coco_rows(out, "class_embed", panoptic_category_ids)
    return out


def _split_in_proj(prefix_in: str, prefix_out: str, state_dict, out) -> None:
    weight = state_dict[prefix_in + "in_proj_weight"]
    bias = state_dict[prefix_in + "in_proj_bias"]
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3), bias.chunk(3)):
        out[f"{prefix_out}{name}.weight"] = w.clone()
        out[f"{prefix_out}{name}.bias"] = b.clone()


def hf_to_libdet(
    state_dict: dict[str, torch.Tensor], *, coco_classes: bool = True, panoptic_category_ids: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Hugging Face ``DetrForObjectDetection`` / ``DetrForSegmentation`` ``state_dict`` (hub / transformers 4 or
    transformers 5 names, timm or native ResNet backbone) -> libdet ``DETR`` / ``DETRSegm`` ``state_dict``."""
    parts = _split_segmentation(state_dict)
    if parts is not None:
        detection = hf_to_libdet(parts[0], coco_classes=coco_classes, panoptic_category_ids=panoptic_category_ids)
        head = {(_apply_rules(k, _SEGM_V5_TO_V4) or k): v for k, v in parts[1].items()}
        return _join_segmentation(detection, head)
    sd = {(_apply_rules(k, _HF_V4_TO_V5, all_rules=True) or k): v for k, v in state_dict.items()}
    prefix = "model.backbone.model."
    native = any(k.startswith(prefix + "embedder.") for k in sd)
    out = _rename_backbone(sd, prefix, "backbone.", _HF_RESNET_TO_D2 if native else _TORCHVISION_TO_D2)
    attn = re.compile(
        r"^model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.(weight|bias)$"
    )
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith(prefix):
            continue
        m = attn.match(k)
        if m:
            module = "self_attn" if m[3] == "self_attn" else "multihead_attn"
            qkv.setdefault(f"transformer.{m[1]}.layers.{m[2]}.{module}.in_proj_{m[5]}", {})[m[4]] = v
            continue
        new = _apply_rules(k, _HF_TO_LIBDET)
        if new is None:
            raise KeyError(f"DETR weight conversion: Hugging Face key {k!r} has no libdet counterpart.")
        out[new] = v
    for name, parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise KeyError(f"DETR weight conversion: {name} lacks some of q_proj/k_proj/v_proj (got {sorted(parts)}).")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if coco_classes:
        _gather_coco_rows(out, "class_embed", panoptic_category_ids)
    return out


def libdet_to_hf(
    state_dict: dict[str, torch.Tensor],
    *,
    coco_classes: bool = True,
    backbone: str = "native",
    layout: str = "v4",
    panoptic_category_ids: list[int] | None = None,
) -> dict[str, torch.Tensor]:
    """libdet ``DETR`` / ``DETRSegm`` ``state_dict`` -> Hugging Face ``DetrForObjectDetection`` /
    ``DetrForSegmentation`` ``state_dict``.

    Args:
        backbone: "native" (transformers' ResNetBackbone, ``use_timm_backbone=False``) or "timm".
        layout: "v4" (the hub files' names, which ``from_pretrained`` of transformers 4 and 5 both read) or "v5"
            (transformers 5 module names, for ``load_state_dict``).
    """
    if backbone not in ("native", "timm") or layout not in ("v4", "v5"):
        raise ValueError(f"libdet_to_hf: backbone={backbone!r} / layout={layout!r}; expected native|timm, v4|v5.")
    parts = _split_segmentation(state_dict)
    if parts is not None:
        detection = libdet_to_hf(
            parts[0],
            coco_classes=coco_classes,
            backbone=backbone,
            layout=layout,
            panoptic_category_ids=panoptic_category_ids,
        )
        head = parts[1] if layout == "v4" else {(_apply_rules(k, _SEGM_V4_TO_V5) or k): v for k, v in parts[1].items()}
        return _join_segmentation(detection, head)
    sd = dict(state_dict)
    if coco_classes:
        _scatter_coco_rows(sd, "class_embed", panoptic_category_ids)
    out = _rename_backbone(
        sd, "backbone.", "model.backbone.model.", _D2_TO_HF_RESNET if backbone == "native" else _D2_TO_TORCHVISION
    )
    attn = re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|multihead_attn)\.in_proj_weight$")
    for k, v in sd.items():
        if k.startswith("backbone.") or k.endswith("in_proj_bias"):
            continue
        m = attn.match(k)
        if m:
            module = "self_attn" if m[3] == "self_attn" else "encoder_attn"
            _split_in_proj(k[: -len("in_proj_weight")], f"model.{m[1]}.layers.{m[2]}.{module}.", sd, out)
            continue
        new = _apply_rules(k, _LIBDET_TO_HF)
        if new is None:
            raise KeyError(f"DETR weight conversion: libdet key {k!r} has no Hugging Face counterpart.")
        out[new] = v
    if layout == "v4":
        out = {(_apply_rules(k, _HF_V5_TO_V4, all_rules=True) or k): v for k, v in out.items()}
    return out


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """The layout ("official", "hf" or "libdet") of a DETR or segmentation-DETR ``state_dict``, from its keys."""
    parts = _split_segmentation(state_dict)
    if parts is not None:
        return detect_layout(parts[0])
    if any(k.startswith("backbone.0.body.") for k in state_dict):
        return "official"
    if any(k.startswith(("class_labels_classifier.", "model.query_position_embeddings.")) for k in state_dict):
        return "hf"
    if any(k.startswith("transformer.encoder.") for k in state_dict) and any(
        k.startswith("backbone.") for k in state_dict
    ):
        return "libdet"
    raise ValueError(f"Not a DETR state_dict of a known layout (first keys: {sorted(state_dict)[:5]}).")


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a DETR weight file: ``.safetensors`` (the hub's ``model.safetensors``) or a torch file (the official
    ``{"model": ...}`` checkpoint, a libdet checkpoint, a hub ``pytorch_model.bin`` or a bare ``state_dict``).

    Torch files load with ``weights_only=True`` (the official checkpoint's ``args`` Namespace is allowed)."""
    import argparse

    from libdet.utils.file_io import PathManager

    local = PathManager.get_local_path(path)
    if local.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(local)
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(local, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state_dict (or {{'model': state_dict}}) of tensors.")
    return obj
