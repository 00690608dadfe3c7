"""Make the ``detr`` package (``projects/DETR/detr``) importable in these tests."""

import os
import sys

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402


def build_tiny_detr(
    *,
    num_classes: int = 5,
    num_queries: int = 10,
    d_model: int = 32,
    nhead: int = 4,
    layers: int = 2,
    learned_pos: bool = False,
    out_features: tuple[str, ...] = ("res5",),
):
    """A DETR small enough for unit tests: a narrow ResNet-50-layout backbone (FrozenBN), 2+2 layers of width 32."""
    from detr import DETR, HungarianMatcher, PositionEmbeddingLearned, PositionEmbeddingSine, SetCriterion, Transformer

    from libdet.modeling.backbone import BasicStem, ResNet

    backbone = ResNet(
        stem=BasicStem(in_channels=3, out_channels=16, norm="FrozenBN"),
        stages=ResNet.make_default_stages(
            depth=50,
            stem_out_channels=16,
            res2_out_channels=32,
            width_per_group=8,
            stride_in_1x1=False,
            norm="FrozenBN",
        ),
        out_features=list(out_features),
    )
    pos = (
        PositionEmbeddingLearned(num_pos_feats=d_model // 2)
        if learned_pos
        else PositionEmbeddingSine(num_pos_feats=d_model // 2)
    )
    return DETR(
        backbone=backbone,
        position_embedding=pos,
        transformer=Transformer(
            d_model=d_model, nhead=nhead, num_encoder_layers=layers, num_decoder_layers=layers, dim_feedforward=64
        ),
        num_classes=num_classes,
        num_queries=num_queries,
        criterion=SetCriterion(num_classes=num_classes, matcher=HungarianMatcher()),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@pytest.fixture
def tiny_detr():
    """Factory of seeded tiny DETRs (see :func:`build_tiny_detr`)."""

    def make(**kwargs):
        torch.manual_seed(0)
        return build_tiny_detr(**kwargs)

    return make


def build_tiny_detr_segm(*, num_classes: int = 5, is_thing=None, freeze_detr: bool = True, **kwargs):
    """A :class:`~detr.segmentation.DETRSegm` around a tiny DETR of width 128 (the mask head's narrowest layer,
    d_model / 16, needs 8 channels for its GroupNorm)."""
    from detr.segmentation import DETRSegm, MaskHeadSmallConv, MHAttentionMap

    detr = build_tiny_detr(
        num_classes=num_classes, d_model=128, nhead=8, out_features=("res2", "res3", "res4", "res5"), **kwargs
    )
    return DETRSegm(
        detr=detr,
        bbox_attention=MHAttentionMap(query_dim=128, hidden_dim=128, num_heads=8),
        mask_head=MaskHeadSmallConv(dim=128 + 8, fpn_dims=[128, 64, 32], context_dim=128),
        freeze_detr=freeze_detr,
        is_thing=is_thing if is_thing is not None else [True] * (num_classes - 2) + [False] * 2,
    )


@pytest.fixture
def tiny_detr_segm():
    """Factory of seeded tiny panoptic DETRs (see :func:`build_tiny_detr_segm`)."""

    def make(**kwargs):
        torch.manual_seed(0)
        return build_tiny_detr_segm(**kwargs)

    return make
