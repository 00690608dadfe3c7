"""Translate the ``MODEL`` section of a detectron2 YAML config (:class:`CfgNode`) into a lazy model config.

Each ``*_config(cfg, ...)`` returns a lazy-config node (``{"_target_": ..., **kwargs}``) of libdet's keyword-only
modules, the same tree the lazy configs under ``configs/common/models`` write by hand, so ``instantiate`` builds identical modules (state-dict
keys and shapes equal detectron2's). Shapes travel as :class:`ShapeSpec` values computed from the config.

Names in the config (``MODEL.BACKBONE.NAME``, ``MODEL.ROI_HEADS.NAME``, ...) are looked up in the registries of
:mod:`libdet.modeling.registries`. libdet's own entries translate field by field; a subclass of one of them
without a ``from_config`` is translated like its base with the subclass as target; anything else a user
registered is called as detectron2 calls it, ``obj(cfg, input_shape)`` (see :func:`build_registered`).

Modeling is imported inside the functions: ``libdet.config`` stays importable without it.
"""

from __future__ import annotations

import math
from typing import Any

from .config import CfgNode
from .yaml_nodes import L

__all__ = [
    "anchor_generator_config",
    "backbone_config",
    "box_head_config",
    "build_registered",
    "builtin_from_config",
    "keypoint_head_config",
    "mask_head_config",
    "model_config",
    "proposal_generator_config",
    "roi_heads_config",
    "rpn_head_config",
    "sem_seg_head_config",
]

_BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
_STAGE_INDEX = {"stem": 1, "res2": 2, "res3": 3, "res4": 4, "res5": 5}


def build_registered(*, registry: str, name: str, cfg_yaml: str, args: list | None = None) -> Any:
    """Build a user-registered object the detectron2 way: ``REGISTRY.get(name)(cfg, *args)``.

    The lazy config stores the YAML config as text (``cfg_yaml``), so it stays saveable.
    """
    from libdet.modeling import registries

    reg = getattr(registries, f"{registry}_REGISTRY")
    cfg = CfgNode.load_cfg(cfg_yaml)
    return reg.get(name)(cfg, *(args or []))


def _lookup(registry: str, key: str, name: str, builtins: dict[str, Any]) -> tuple[str, Any]:
    """Classify the object registered as ``name``: ``("builtin", libdet class or function)`` when it is (or
    subclasses, without a ``from_config``) one of ``builtins``; otherwise ``("user", object)``.

    Raises:
        KeyError: naming the config key when nothing is registered under ``name``.
    """
    from libdet.modeling import registries

    _ensure_builtins_registered()
    reg = getattr(registries, f"{registry}_REGISTRY")
    try:
        obj = reg.get(name)
    except KeyError:
        known = sorted(name for name, _ in reg)
        raise KeyError(
            f"{key}={name!r}: nothing is registered under this name in {registry}_REGISTRY (registered: {known}). "
            f"Register your class with @{registry}_REGISTRY.register() and import its module before building."
        ) from None
    if obj is builtins.get(name):
        return "builtin", obj
    if isinstance(obj, type) and "from_config" not in _own_attrs(obj):
        for builtin in builtins.values():
            if isinstance(builtin, type) and issubclass(obj, builtin):
                return "builtin", obj
    return "user", obj


def _own_attrs(cls: type) -> set[str]:
    """Attribute names defined by ``cls`` or its non-libdet bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("libdet.") or klass is object:
            continue
        names.update(vars(klass))
    return names


def _user_node(registry: str, name: str, cfg: CfgNode, *args: Any) -> Any:
    return L(build_registered)(registry=registry, name=name, cfg_yaml=cfg.dump(), args=list(args))


def _ensure_builtins_registered() -> None:
    # libdet's modules are registered under detectron2's names by the build modules at detectron2's paths.
    import libdet.modeling.backbone.build  # noqa: F401
    import libdet.modeling.meta_arch.build  # noqa: F401
    import libdet.modeling.proposal_generator.build  # noqa: F401
    import libdet.modeling.roi_heads.build  # noqa: F401


def _shape_node(spec: Any) -> Any:
    from libdet.layers import ShapeSpec

    return L(ShapeSpec)(channels=spec.channels, height=spec.height, width=spec.width, stride=spec.stride)


def _resnet(cfg: CfgNode, in_channels: int) -> tuple[Any, dict[str, Any]]:
    """``ResNet`` node and its output shapes, as detectron2's ``build_resnet_backbone``."""
    from libdet.layers import ShapeSpec
    from libdet.modeling.backbone import BasicBlock, BasicStem, BottleneckBlock, DeformBottleneckBlock, ResNet

    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(f"MODEL.RESNETS.DEPTH={depth}: expected one of {sorted(_BLOCKS_PER_DEPTH)}.")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION={r.RES5_DILATION}: expected 1 or 2.")
    out_features = list(r.OUT_FEATURES)
    unknown = [f for f in out_features if f not in _STAGE_INDEX]
    if unknown:
        raise ValueError(
            f"MODEL.RESNETS.OUT_FEATURES: unknown features {unknown}; expected among {list(_STAGE_INDEX)}."
        )
    if depth < 50:
        if r.RES2_OUT_CHANNELS != 64:
            raise ValueError(
                f"MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for DEPTH={depth}, got {r.RES2_OUT_CHANNELS}."
            )
        if any(r.DEFORM_ON_PER_STAGE) or r.RES5_DILATION != 1 or r.NUM_GROUPS != 1:
            raise ValueError(
                f"MODEL.RESNETS.DEPTH={depth} (basic blocks) supports no DEFORM_ON_PER_STAGE, RES5_DILATION or NUM_GROUPS."
            )

    stem = L(BasicStem)(in_channels=in_channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    shapes = {"stem": ShapeSpec(channels=r.STEM_OUT_CHANNELS, stride=4)}
    last_stage = max(_STAGE_INDEX[f] for f in out_features)
    stages = []
    c_in, c_out, bottleneck = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stride = 4
    for idx, stage_idx in enumerate(range(2, last_stage + 1)):
        dilation = r.RES5_DILATION if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        blocks = []
        for b in range(_BLOCKS_PER_DEPTH[depth][idx]):
            kwargs: dict[str, Any] = dict(
                in_channels=c_in if b == 0 else c_out,
                out_channels=c_out,
                stride=first_stride if b == 0 else 1,
                norm=r.NORM,
            )
            if depth < 50:
                blocks.append(L(BasicBlock)(**kwargs))
                continue
            kwargs.update(
                bottleneck_channels=bottleneck,
                num_groups=r.NUM_GROUPS,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
            )
            if r.DEFORM_ON_PER_STAGE[idx]:
                kwargs.update(deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS)
                blocks.append(L(DeformBottleneckBlock)(**kwargs))
            else:
                blocks.append(L(BottleneckBlock)(**kwargs))
        stages.append(blocks)
        stride *= first_stride
        shapes[f"res{stage_idx}"] = ShapeSpec(channels=c_out, stride=stride)
        c_in, c_out, bottleneck = c_out, c_out * 2, bottleneck * 2
    node = L(ResNet)(stem=stem, stages=stages, out_features=out_features, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
    return node, {f: shapes[f] for f in out_features}


def _fpn(cfg: CfgNode, bottom_up: Any, bottom_shapes: dict[str, Any], top: str) -> tuple[Any, dict[str, Any]]:
    """``FPN`` node over ``bottom_up`` with a ``"maxpool"`` (P6) or ``"p6p7"`` (from res5, or from P5 for FCOS)
    top block, and its output shapes."""
    from libdet.layers import ShapeSpec
    from libdet.modeling.backbone import FPN, LastLevelMaxPool, LastLevelP6P7

    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    missing = [f for f in in_features if f not in bottom_shapes]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {in_features}: {missing} are not backbone outputs "
            f"(MODEL.RESNETS.OUT_FEATURES gives {list(bottom_shapes)})."
        )
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    shapes = {}
    for f in in_features:
        level = int(math.log2(bottom_shapes[f].stride))
        shapes[f"p{level}"] = ShapeSpec(channels=out_channels, stride=bottom_shapes[f].stride)
    last = int(math.log2(bottom_shapes[in_features[-1]].stride))
    if top == "maxpool":
        top_block = L(LastLevelMaxPool)()
        extra = [last + 1]
    else:
        if "res5" not in bottom_shapes:
            raise ValueError("The RetinaNet FPN backbone builds P6 from res5: MODEL.RESNETS.OUT_FEATURES needs 'res5'.")
        top_block = L(LastLevelP6P7)(in_channels=bottom_shapes["res5"].channels, out_channels=out_channels)
        extra = [last + 1, last + 2]
    for level in extra:
        shapes[f"p{level}"] = ShapeSpec(channels=out_channels, stride=2**level)
    node = L(FPN)(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    return node, shapes


def backbone_config(cfg: CfgNode, input_shape: Any = None) -> tuple[Any, dict[str, Any]]:
    """The backbone of ``MODEL.BACKBONE.NAME`` and its output shapes ``{name: ShapeSpec}``.

    Args:
        cfg: the YAML config.
        input_shape: ``ShapeSpec`` of the input; default ``len(MODEL.PIXEL_MEAN)`` channels.
    """
    from libdet.layers import ShapeSpec
    from libdet.modeling.backbone import build as backbone_build

    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    kind, obj = _lookup("BACKBONE", "MODEL.BACKBONE.NAME", name, backbone_build.BUILTIN_BACKBONES)
    if kind == "user":
        # The heads need the backbone's output shapes: build the user's backbone once to read them.
        built = obj(cfg, input_shape)
        shapes = dict(built.output_shape())
        return _user_node("BACKBONE", name, cfg, _shape_node(input_shape)), shapes
    resnet, resnet_shapes = _resnet(cfg, input_shape.channels)
    if name == "build_resnet_backbone":
        return resnet, resnet_shapes
    if name == "build_resnet_fpn_backbone":
        return _fpn(cfg, resnet, resnet_shapes, "maxpool")
    return _fpn(cfg, resnet, resnet_shapes, "p6p7")


def _per_level(values: list, num_levels: int, key: str) -> list:
    if len(values) == 1:
        return [list(values[0])] * num_levels
    if len(values) != num_levels:
        raise ValueError(f"{key} has {len(values)} entries for {num_levels} feature levels; give 1 or {num_levels}.")
    return [list(v) for v in values]


def _num_anchors(cfg: CfgNode, num_levels: int) -> int:
    a = cfg.MODEL.ANCHOR_GENERATOR
    sizes = _per_level(a.SIZES, num_levels, "MODEL.ANCHOR_GENERATOR.SIZES")
    ratios = _per_level(a.ASPECT_RATIOS, num_levels, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
    counts = {len(s) * len(r) for s, r in zip(sizes, ratios)}
    if a.NAME == "RotatedAnchorGenerator":
        angles = _per_level(a.ANGLES, num_levels, "MODEL.ANCHOR_GENERATOR.ANGLES")
        counts = {len(s) * len(r) * len(g) for s, r, g in zip(sizes, ratios, angles)}
    if len(counts) != 1:
        raise ValueError("MODEL.ANCHOR_GENERATOR: every feature level must have the same number of anchors.")
    return counts.pop()


def _features(shapes: dict[str, Any], features: list[str], key: str) -> list[Any]:
    missing = [f for f in features if f not in shapes]
    if missing:
        raise ValueError(f"{key}={list(features)}: {missing} are not backbone outputs (available: {list(shapes)}).")
    return [shapes[f] for f in features]


def anchor_generator_config(cfg: CfgNode, input_shape: list[Any]) -> Any:
    """The anchor generator of ``MODEL.ANCHOR_GENERATOR`` for features of shapes ``input_shape``."""
    from libdet.modeling.anchor_generator import DefaultAnchorGenerator, RotatedAnchorGenerator
    from libdet.modeling.proposal_generator import build as pg_build

    a = cfg.MODEL.ANCHOR_GENERATOR
    kind, obj = _lookup("ANCHOR_GENERATOR", "MODEL.ANCHOR_GENERATOR.NAME", a.NAME, pg_build.BUILTIN_ANCHOR_GENERATORS)
    if kind == "user":
        return _user_node("ANCHOR_GENERATOR", a.NAME, cfg, [_shape_node(s) for s in input_shape])
    n = len(input_shape)
    kwargs = dict(
        sizes=_per_level(a.SIZES, n, "MODEL.ANCHOR_GENERATOR.SIZES"),
        aspect_ratios=_per_level(a.ASPECT_RATIOS, n, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"),
        strides=[s.stride for s in input_shape],
        offset=a.OFFSET,
    )
    if issubclass(obj, RotatedAnchorGenerator):
        kwargs["angles"] = _per_level(a.ANGLES, n, "MODEL.ANCHOR_GENERATOR.ANGLES")
        return L(obj)(**kwargs)
    if not issubclass(obj, DefaultAnchorGenerator):
        raise TypeError(f"MODEL.ANCHOR_GENERATOR.NAME={a.NAME!r} is not an anchor generator class.")
    return L(obj)(**kwargs)


def rpn_head_config(cfg: CfgNode, input_shape: list[Any]) -> Any:
    """The RPN head of ``MODEL.RPN.HEAD_NAME``."""
    from libdet.modeling.proposal_generator import build as pg_build

    name = cfg.MODEL.RPN.HEAD_NAME
    kind, obj = _lookup("RPN_HEAD", "MODEL.RPN.HEAD_NAME", name, pg_build.BUILTIN_RPN_HEADS)
    if kind == "user":
        return _user_node("RPN_HEAD", name, cfg, [_shape_node(s) for s in input_shape])
    channels = {s.channels for s in input_shape}
    if len(channels) != 1:
        raise ValueError(f"MODEL.RPN.IN_FEATURES: the features must have the same channels, got {sorted(channels)}.")
    box_dim = 5 if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RRPN" else 4
    return L(obj)(
        in_channels=channels.pop(),
        num_anchors=_num_anchors(cfg, len(input_shape)),
        box_dim=box_dim,
        conv_dims=list(cfg.MODEL.RPN.CONV_DIMS),
    )


def proposal_generator_config(cfg: CfgNode, shapes: dict[str, Any]) -> Any:
    """The proposal generator of ``MODEL.PROPOSAL_GENERATOR.NAME``; ``None`` for ``"PrecomputedProposals"``."""
    from libdet.modeling.box_regression import Box2BoxTransform, Box2BoxTransformRotated
    from libdet.modeling.matcher import Matcher
    from libdet.modeling.proposal_generator import RRPN
    from libdet.modeling.proposal_generator import build as pg_build

    name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if name == "PrecomputedProposals":
        return None
    kind, obj = _lookup(
        "PROPOSAL_GENERATOR", "MODEL.PROPOSAL_GENERATOR.NAME", name, pg_build.BUILTIN_PROPOSAL_GENERATORS
    )
    if kind == "user":
        return _user_node("PROPOSAL_GENERATOR", name, cfg, {k: _shape_node(v) for k, v in shapes.items()})
    rpn = cfg.MODEL.RPN
    in_shapes = _features(shapes, rpn.IN_FEATURES, "MODEL.RPN.IN_FEATURES")
    rotated = issubclass(obj, RRPN)
    transform = Box2BoxTransformRotated if rotated else Box2BoxTransform
    return L(obj)(
        in_features=list(rpn.IN_FEATURES),
        head=rpn_head_config(cfg, in_shapes),
        anchor_generator=anchor_generator_config(cfg, in_shapes),
        anchor_matcher=L(Matcher)(
            thresholds=list(rpn.IOU_THRESHOLDS), labels=list(rpn.IOU_LABELS), allow_low_quality_matches=True
        ),
        box2box_transform=L(transform)(weights=list(rpn.BBOX_REG_WEIGHTS)),
        batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn.POSITIVE_FRACTION,
        pre_nms_topk=(rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
        post_nms_topk=(rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
        nms_thresh=rpn.NMS_THRESH,
        min_box_size=float(cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE),
        anchor_boundary_thresh=float(rpn.BOUNDARY_THRESH),
        loss_weight={"loss_rpn_cls": rpn.LOSS_WEIGHT, "loss_rpn_loc": rpn.BBOX_REG_LOSS_WEIGHT * rpn.LOSS_WEIGHT},
        box_reg_loss_type=rpn.BBOX_REG_LOSS_TYPE,
        smooth_l1_beta=rpn.SMOOTH_L1_BETA,
    )


def _pooler(section: Any, in_shapes: list[Any]) -> Any:
    from libdet.modeling.poolers import ROIPooler

    return L(ROIPooler)(
        output_size=section.POOLER_RESOLUTION,
        scales=tuple(1.0 / s.stride for s in in_shapes),
        sampling_ratio=section.POOLER_SAMPLING_RATIO,
        pooler_type=section.POOLER_TYPE,
    )


def _pooled_shape(in_shapes: list[Any], resolution: int, key: str) -> Any:
    from libdet.layers import ShapeSpec

    channels = {s.channels for s in in_shapes}
    if len(channels) != 1:
        raise ValueError(f"{key}: the pooled features must have the same channels, got {sorted(channels)}.")
    return ShapeSpec(channels=channels.pop(), height=resolution, width=resolution)


def box_head_config(cfg: CfgNode, input_shape: Any) -> tuple[Any, Any]:
    """The box head of ``MODEL.ROI_BOX_HEAD.NAME`` and its output shape."""
    from libdet.layers import ShapeSpec
    from libdet.modeling.roi_heads import build as rh_build

    h = cfg.MODEL.ROI_BOX_HEAD
    kind, obj = _lookup("ROI_BOX_HEAD", "MODEL.ROI_BOX_HEAD.NAME", h.NAME, rh_build.BUILTIN_BOX_HEADS)
    if kind == "user":
        out = obj(cfg, input_shape).output_shape  # read the shape from a throwaway instance
        return _user_node("ROI_BOX_HEAD", h.NAME, cfg, _shape_node(input_shape)), out
    conv_dims, fc_dims = [h.CONV_DIM] * h.NUM_CONV, [h.FC_DIM] * h.NUM_FC
    node = L(obj)(input_shape=_shape_node(input_shape), conv_dims=conv_dims, fc_dims=fc_dims, conv_norm=h.NORM)
    if fc_dims:
        out = ShapeSpec(channels=fc_dims[-1])
    else:
        out = ShapeSpec(
            channels=conv_dims[-1] if conv_dims else input_shape.channels,
            height=input_shape.height,
            width=input_shape.width,
        )
    return node, out


def _box_predictor(
    cfg: CfgNode, input_shape: Any, weights: Any, cls_agnostic: bool, loss_scale: float = 1.0, rotated: bool = False
) -> Any:
    from libdet.data.detection_utils import fed_loss_cls_weights_fn
    from libdet.modeling.box_regression import Box2BoxTransform, Box2BoxTransformRotated
    from libdet.modeling.roi_heads import FastRCNNOutputLayers
    from libdet.modeling.roi_heads.rotated_fast_rcnn import RotatedFastRCNNOutputLayers

    h = cfg.MODEL.ROI_BOX_HEAD
    kwargs: dict[str, Any] = {}
    if h.USE_FED_LOSS:
        kwargs["get_fed_loss_cls_weights"] = L(fed_loss_cls_weights_fn)(
            dataset_names=list(cfg.DATASETS.TRAIN), freq_weight_power=h.FED_LOSS_FREQ_WEIGHT_POWER
        )
    predictor, transform = (
        (RotatedFastRCNNOutputLayers, Box2BoxTransformRotated) if rotated else (FastRCNNOutputLayers, Box2BoxTransform)
    )
    return L(predictor)(
        input_shape=_shape_node(input_shape),
        box2box_transform=L(transform)(weights=list(weights)),
        num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        test_score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        test_nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        cls_agnostic_bbox_reg=cls_agnostic,
        smooth_l1_beta=h.SMOOTH_L1_BETA,
        box_reg_loss_type=h.BBOX_REG_LOSS_TYPE,
        loss_weight={"loss_cls": loss_scale, "loss_box_reg": h.BBOX_REG_LOSS_WEIGHT * loss_scale},
        use_fed_loss=h.USE_FED_LOSS,
        use_sigmoid_ce=h.USE_SIGMOID_CE,
        fed_loss_num_classes=h.FED_LOSS_NUM_CLASSES,
        **kwargs,
    )


def mask_head_config(cfg: CfgNode, input_shape: Any, loss_scale: float = 1.0) -> Any:
    """The mask head of ``MODEL.ROI_MASK_HEAD.NAME``."""
    from libdet.modeling.roi_heads import build as rh_build

    h = cfg.MODEL.ROI_MASK_HEAD
    kind, obj = _lookup("ROI_MASK_HEAD", "MODEL.ROI_MASK_HEAD.NAME", h.NAME, rh_build.BUILTIN_MASK_HEADS)
    if kind == "user":
        return _user_node("ROI_MASK_HEAD", h.NAME, cfg, _shape_node(input_shape))
    return L(obj)(
        input_shape=_shape_node(input_shape),
        num_classes=1 if h.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        # NUM_CONV convs, then the deconv of the same width
        conv_dims=[h.CONV_DIM] * (h.NUM_CONV + 1),
        conv_norm=h.NORM,
        loss_weight=loss_scale,
        vis_period=cfg.VIS_PERIOD,
    )


def keypoint_head_config(cfg: CfgNode, input_shape: Any) -> Any:
    """The keypoint head of ``MODEL.ROI_KEYPOINT_HEAD.NAME``."""
    from libdet.modeling.roi_heads import build as rh_build

    h = cfg.MODEL.ROI_KEYPOINT_HEAD
    kind, obj = _lookup("ROI_KEYPOINT_HEAD", "MODEL.ROI_KEYPOINT_HEAD.NAME", h.NAME, rh_build.BUILTIN_KEYPOINT_HEADS)
    if kind == "user":
        return _user_node("ROI_KEYPOINT_HEAD", h.NAME, cfg, _shape_node(input_shape))
    if h.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS:
        normalizer: Any = "visible"
    else:
        # the keypoints a batch of positive proposals would have, if all were visible
        normalizer = h.NUM_KEYPOINTS * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE * cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION
    return L(obj)(
        input_shape=_shape_node(input_shape),
        num_keypoints=h.NUM_KEYPOINTS,
        conv_dims=list(h.CONV_DIMS),
        loss_weight=h.LOSS_WEIGHT,
        loss_normalizer=normalizer,
    )


def _res5_blocks(cfg: CfgNode) -> tuple[list[Any], int]:
    """The ``res5`` stage run by ``Res5ROIHeads`` on pooled ``res4`` features, and its output channels."""
    from libdet.modeling.backbone import BottleneckBlock

    r = cfg.MODEL.RESNETS
    if r.DEFORM_ON_PER_STAGE[-1]:
        raise ValueError("Res5ROIHeads: MODEL.RESNETS.DEFORM_ON_PER_STAGE[-1] (deformable res5) is not supported.")
    if r.RES5_DILATION != 1:
        raise ValueError("Res5ROIHeads: MODEL.RESNETS.RES5_DILATION must be 1 (the head's res5 has stride 2).")
    out_channels = r.RES2_OUT_CHANNELS * 8
    bottleneck = r.NUM_GROUPS * r.WIDTH_PER_GROUP * 8
    blocks = [
        L(BottleneckBlock)(
            in_channels=out_channels // 2 if i == 0 else out_channels,
            out_channels=out_channels,
            bottleneck_channels=bottleneck,
            stride=2 if i == 0 else 1,
            num_groups=r.NUM_GROUPS,
            norm=r.NORM,
            stride_in_1x1=r.STRIDE_IN_1X1,
        )
        for i in range(3)
    ]
    return blocks, out_channels


def roi_heads_config(cfg: CfgNode, shapes: dict[str, Any], loss_scale: float = 1.0) -> Any:
    """The ROI heads of ``MODEL.ROI_HEADS.NAME`` over backbone features of shapes ``shapes``.

    Args:
        loss_scale: multiplies the box / mask losses (PanopticFPN's ``INSTANCE_LOSS_WEIGHT``).
    """
    from libdet.layers import ShapeSpec
    from libdet.modeling.matcher import Matcher
    from libdet.modeling.roi_heads import CascadeROIHeads, Res5ROIHeads
    from libdet.modeling.roi_heads import build as rh_build

    rh = cfg.MODEL.ROI_HEADS
    kind, obj = _lookup("ROI_HEADS", "MODEL.ROI_HEADS.NAME", rh.NAME, rh_build.BUILTIN_ROI_HEADS)
    if kind == "user":
        return _user_node("ROI_HEADS", rh.NAME, cfg, {k: _shape_node(v) for k, v in shapes.items()})
    in_features = list(rh.IN_FEATURES)
    in_shapes = _features(shapes, in_features, "MODEL.ROI_HEADS.IN_FEATURES")
    common = dict(
        num_classes=rh.NUM_CLASSES,
        batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rh.POSITIVE_FRACTION,
        proposal_append_gt=rh.PROPOSAL_APPEND_GT,
    )
    matcher = L(Matcher)(
        thresholds=list(rh.IOU_THRESHOLDS), labels=list(rh.IOU_LABELS), allow_low_quality_matches=False
    )
    box = cfg.MODEL.ROI_BOX_HEAD

    if issubclass(obj, Res5ROIHeads):
        if cfg.MODEL.KEYPOINT_ON:
            raise ValueError("MODEL.KEYPOINT_ON: Res5ROIHeads has no keypoint branch; use StandardROIHeads.")
        blocks, out_channels = _res5_blocks(cfg)
        pooled = ShapeSpec(channels=out_channels, height=box.POOLER_RESOLUTION, width=box.POOLER_RESOLUTION)
        return L(obj)(
            **common,
            proposal_matcher=matcher,
            in_features=in_features,
            pooler=_pooler(box, in_shapes),
            res5=blocks,
            box_predictor=_box_predictor(
                cfg, ShapeSpec(channels=out_channels, height=1, width=1), box.BBOX_REG_WEIGHTS,
                box.CLS_AGNOSTIC_BBOX_REG, loss_scale,
            ),
            mask_head=mask_head_config(cfg, pooled, loss_scale) if cfg.MODEL.MASK_ON else None,
        )  # fmt: skip

    branches: dict[str, Any] = dict(box_in_features=in_features, box_pooler=_pooler(box, in_shapes))
    box_in = _pooled_shape(in_shapes, box.POOLER_RESOLUTION, "MODEL.ROI_HEADS.IN_FEATURES")
    if cfg.MODEL.MASK_ON:
        m = cfg.MODEL.ROI_MASK_HEAD
        branches.update(
            mask_in_features=in_features,
            mask_pooler=_pooler(m, in_shapes),
            mask_head=mask_head_config(cfg, _pooled_shape(in_shapes, m.POOLER_RESOLUTION, "ROI mask"), loss_scale),
        )
    if cfg.MODEL.KEYPOINT_ON:
        k = cfg.MODEL.ROI_KEYPOINT_HEAD
        branches.update(
            keypoint_in_features=in_features,
            keypoint_pooler=_pooler(k, in_shapes),
            keypoint_head=keypoint_head_config(cfg, _pooled_shape(in_shapes, k.POOLER_RESOLUTION, "ROI keypoint")),
        )

    if issubclass(obj, CascadeROIHeads):
        cascade = cfg.MODEL.ROI_BOX_CASCADE_HEAD
        if len(cascade.BBOX_REG_WEIGHTS) != len(cascade.IOUS):
            raise ValueError("MODEL.ROI_BOX_CASCADE_HEAD: BBOX_REG_WEIGHTS and IOUS need one entry per stage each.")
        if not box.CLS_AGNOSTIC_BBOX_REG:
            raise ValueError("CascadeROIHeads needs MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG: True.")
        if list(rh.IOU_THRESHOLDS) != [cascade.IOUS[0]]:
            raise ValueError("CascadeROIHeads: MODEL.ROI_HEADS.IOU_THRESHOLDS must be [ROI_BOX_CASCADE_HEAD.IOUS[0]].")
        heads, predictors, matchers = [], [], []
        for weights, iou in zip(cascade.BBOX_REG_WEIGHTS, cascade.IOUS):
            head, head_out = box_head_config(cfg, box_in)
            heads.append(head)
            predictors.append(_box_predictor(cfg, head_out, weights, True, loss_scale))
            matchers.append(L(Matcher)(thresholds=[iou], labels=[0, 1], allow_low_quality_matches=False))
        return L(obj)(
            **common,
            box_heads=heads,
            box_predictors=predictors,
            proposal_matchers=matchers,
            train_on_pred_boxes=box.TRAIN_ON_PRED_BOXES,
            **branches,
        )

    head, head_out = box_head_config(cfg, box_in)
    rotated = issubclass(obj, rh_build.BUILTIN_ROI_HEADS["RROIHeads"])
    if rotated and (cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON):
        raise ValueError("RROIHeads has a box branch only: set MODEL.MASK_ON and MODEL.KEYPOINT_ON to False.")
    predictor = _box_predictor(
        cfg, head_out, box.BBOX_REG_WEIGHTS, box.CLS_AGNOSTIC_BBOX_REG, loss_scale, rotated=rotated
    )
    kwargs: dict[str, Any] = {} if rotated else {"train_on_pred_boxes": box.TRAIN_ON_PRED_BOXES}
    return L(obj)(**common, proposal_matcher=matcher, box_head=head, box_predictor=predictor, **branches, **kwargs)


def sem_seg_head_config(cfg: CfgNode, shapes: dict[str, Any]) -> Any:
    """The semantic segmentation head of ``MODEL.SEM_SEG_HEAD.NAME``."""
    from libdet.modeling.meta_arch import build as ma_build

    s = cfg.MODEL.SEM_SEG_HEAD
    kind, obj = _lookup("SEM_SEG_HEADS", "MODEL.SEM_SEG_HEAD.NAME", s.NAME, ma_build.BUILTIN_SEM_SEG_HEADS)
    if kind == "user":
        return _user_node("SEM_SEG_HEADS", s.NAME, cfg, {k: _shape_node(v) for k, v in shapes.items()})
    in_shapes = _features(shapes, s.IN_FEATURES, "MODEL.SEM_SEG_HEAD.IN_FEATURES")
    return L(obj)(
        input_shape={f: _shape_node(shape) for f, shape in zip(s.IN_FEATURES, in_shapes)},
        num_classes=s.NUM_CLASSES,
        conv_dims=s.CONVS_DIM,
        common_stride=s.COMMON_STRIDE,
        loss_weight=s.LOSS_WEIGHT,
        norm=s.NORM,
        ignore_value=s.IGNORE_VALUE,
    )


def _retinanet(cfg: CfgNode, obj: type, backbone: Any, shapes: dict[str, Any]) -> Any:
    from libdet.modeling.box_regression import Box2BoxTransform
    from libdet.modeling.matcher import Matcher
    from libdet.modeling.meta_arch import RetinaNetHead

    r = cfg.MODEL.RETINANET
    in_shapes = _features(shapes, r.IN_FEATURES, "MODEL.RETINANET.IN_FEATURES")
    channels = {s.channels for s in in_shapes}
    if len(channels) != 1:
        raise ValueError(f"MODEL.RETINANET.IN_FEATURES: features must have the same channels, got {sorted(channels)}.")
    return L(obj)(
        backbone=backbone,
        head=L(RetinaNetHead)(
            input_shape=[_shape_node(s) for s in in_shapes],
            num_classes=r.NUM_CLASSES,
            num_anchors=_num_anchors(cfg, len(in_shapes)),
            conv_dims=[channels.pop()] * r.NUM_CONVS,
            norm=r.NORM,
            prior_prob=r.PRIOR_PROB,
        ),
        head_in_features=list(r.IN_FEATURES),
        anchor_generator=anchor_generator_config(cfg, in_shapes),
        box2box_transform=L(Box2BoxTransform)(weights=list(r.BBOX_REG_WEIGHTS)),
        anchor_matcher=L(Matcher)(
            thresholds=list(r.IOU_THRESHOLDS), labels=list(r.IOU_LABELS), allow_low_quality_matches=True
        ),
        num_classes=r.NUM_CLASSES,
        focal_loss_alpha=r.FOCAL_LOSS_ALPHA,
        focal_loss_gamma=r.FOCAL_LOSS_GAMMA,
        smooth_l1_beta=r.SMOOTH_L1_LOSS_BETA,
        box_reg_loss_type=r.BBOX_REG_LOSS_TYPE,
        test_score_thresh=r.SCORE_THRESH_TEST,
        test_topk_candidates=r.TOPK_CANDIDATES_TEST,
        test_nms_thresh=r.NMS_THRESH_TEST,
        max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
        pixel_std=list(cfg.MODEL.PIXEL_STD),
        input_format=cfg.INPUT.FORMAT,
    )


def model_config(cfg: CfgNode) -> Any:
    """The lazy config (a ``DictConfig``) of the whole model of ``MODEL.META_ARCHITECTURE``."""
    from .yaml_nodes import as_config

    return as_config(_model_node(cfg))


def _model_node(cfg: CfgNode) -> Any:
    from libdet.modeling.meta_arch import GeneralizedRCNN, PanopticFPN, ProposalNetwork, RetinaNet, SemanticSegmentor
    from libdet.modeling.meta_arch import build as ma_build

    name = cfg.MODEL.META_ARCHITECTURE
    kind, obj = _lookup("META_ARCH", "MODEL.META_ARCHITECTURE", name, ma_build.BUILTIN_META_ARCHS)
    if kind == "user":
        return _user_node("META_ARCH", name, cfg)
    if cfg.MODEL.LOAD_PROPOSALS != (cfg.MODEL.PROPOSAL_GENERATOR.NAME == "PrecomputedProposals"):
        raise ValueError(
            "MODEL.LOAD_PROPOSALS must be True exactly when MODEL.PROPOSAL_GENERATOR.NAME is 'PrecomputedProposals' "
            f"(got {cfg.MODEL.LOAD_PROPOSALS} and {cfg.MODEL.PROPOSAL_GENERATOR.NAME!r})."
        )
    backbone, shapes = backbone_config(cfg)
    pixel = dict(pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD))
    if issubclass(obj, RetinaNet):
        return _retinanet(cfg, obj, backbone, shapes)
    if issubclass(obj, SemanticSegmentor):
        return L(obj)(backbone=backbone, sem_seg_head=sem_seg_head_config(cfg, shapes), **pixel)
    if issubclass(obj, ProposalNetwork):
        return L(obj)(backbone=backbone, proposal_generator=proposal_generator_config(cfg, shapes), **pixel)
    if issubclass(obj, PanopticFPN):
        p = cfg.MODEL.PANOPTIC_FPN
        return L(obj)(
            backbone=backbone,
            proposal_generator=proposal_generator_config(cfg, shapes),
            roi_heads=roi_heads_config(cfg, shapes, loss_scale=p.INSTANCE_LOSS_WEIGHT),
            sem_seg_head=sem_seg_head_config(cfg, shapes),
            combine_overlap_thresh=p.COMBINE.OVERLAP_THRESH,
            combine_stuff_area_thresh=p.COMBINE.STUFF_AREA_LIMIT,
            combine_instances_score_thresh=p.COMBINE.INSTANCES_CONFIDENCE_THRESH,
            input_format=cfg.INPUT.FORMAT,
            vis_period=cfg.VIS_PERIOD,
            **pixel,
        )
    if issubclass(obj, GeneralizedRCNN):
        return L(obj)(
            backbone=backbone,
            proposal_generator=proposal_generator_config(cfg, shapes),
            roi_heads=roi_heads_config(cfg, shapes),
            input_format=cfg.INPUT.FORMAT,
            vis_period=cfg.VIS_PERIOD,
            **pixel,
        )
    raise TypeError(f"MODEL.META_ARCHITECTURE={name!r}: {obj} is not a meta-architecture libdet can translate.")


# detectron2's super().from_config(cfg, ...) for users' subclasses of libdet modules


def builtin_from_config(base: type, cfg: CfgNode, input_shape: Any = None) -> dict[str, Any]:
    """The built keyword arguments the YAML translation gives libdet class ``base`` for config ``cfg``: what
    detectron2's ``super().from_config(cfg, input_shape)`` returns in a user subclass. libdet's modules have no
    ``from_config``; a ported subclass writes::

        @classmethod
        def from_config(cls, cfg, input_shape):
            ret = builtin_from_config(StandardROIHeads, cfg, input_shape)  # was: super().from_config(...)
            ret["my_option"] = cfg.MODEL.MY_OPTION
            return ret

    Args:
        base: a libdet class registered under detectron2's name (``StandardROIHeads``, ``FastRCNNConvFCHead``,
            ``MaskRCNNConvUpsampleHead``, ``KRCNNConvDeconvUpsampleHead``, ``RPN``, ``StandardRPNHead``,
            ``DefaultAnchorGenerator``, ``SemSegFPNHead``, ``GeneralizedRCNN``, ...).
        input_shape: what detectron2 passes to the class's builder (``dict[str, ShapeSpec]`` of the backbone
            features, a ``ShapeSpec`` for box / mask / keypoint heads, a list for RPN heads and anchor generators,
            nothing for meta-architectures).
    """
    from libdet.modeling.backbone import build as backbone_build  # noqa: F401 (registers the builtins)
    from libdet.modeling.meta_arch import build as ma_build
    from libdet.modeling.proposal_generator import build as pg_build
    from libdet.modeling.roi_heads import build as rh_build

    from .instantiate import instantiate

    # (builtins, config key of the name, translation of the node)
    kinds = [
        (ma_build.BUILTIN_META_ARCHS, "MODEL.META_ARCHITECTURE", lambda c: _model_node(c)),
        (ma_build.BUILTIN_SEM_SEG_HEADS, "MODEL.SEM_SEG_HEAD.NAME", lambda c: sem_seg_head_config(c, input_shape)),
        (rh_build.BUILTIN_ROI_HEADS, "MODEL.ROI_HEADS.NAME", lambda c: roi_heads_config(c, input_shape)),
        (rh_build.BUILTIN_BOX_HEADS, "MODEL.ROI_BOX_HEAD.NAME", lambda c: box_head_config(c, input_shape)[0]),
        (rh_build.BUILTIN_MASK_HEADS, "MODEL.ROI_MASK_HEAD.NAME", lambda c: mask_head_config(c, input_shape)),
        (rh_build.BUILTIN_KEYPOINT_HEADS, "MODEL.ROI_KEYPOINT_HEAD.NAME", lambda c: keypoint_head_config(c, input_shape)),
        (pg_build.BUILTIN_PROPOSAL_GENERATORS, "MODEL.PROPOSAL_GENERATOR.NAME", lambda c: proposal_generator_config(c, input_shape)),
        (pg_build.BUILTIN_RPN_HEADS, "MODEL.RPN.HEAD_NAME", lambda c: rpn_head_config(c, list(input_shape))),
        (pg_build.BUILTIN_ANCHOR_GENERATORS, "MODEL.ANCHOR_GENERATOR.NAME", lambda c: anchor_generator_config(c, list(input_shape))),
    ]  # fmt: skip
    for builtins, key, translate in kinds:
        for name, builtin in builtins.items():
            if builtin is base:
                cfg = cfg.clone()
                cfg.defrost()
                section, _, leaf = key.rpartition(".")
                node_parent = cfg
                for part in section.split("."):
                    node_parent = node_parent[part]
                node_parent[leaf] = name  # translate as the libdet class itself
                node = translate(cfg)
                return {k: instantiate(v) for k, v in node.items() if k != "_target_"}
    raise TypeError(f"builtin_from_config: {base!r} is not a libdet module registered under a detectron2 name.")
