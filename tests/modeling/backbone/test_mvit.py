"""MViTv2: pooling attention against plain attention, stage shapes, relative-position table sizes, detectron2's
key table and pycls (``.pyth``) ImageNet-21k checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.modeling.backbone import FPN, LastLevelMaxPool, MViT
from libdet.modeling.backbone.mvit import MultiScaleAttention, MultiScaleBlock
from libdet.modeling.backbone.vit import Attention

from .test_vit import model_keys, reference_keys

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_mvit(**kwargs) -> MViT:
    args = dict(img_size=64, embed_dim=8, depth=5, num_heads=1, last_block_indexes=(0, 2, 3, 4),
                adaptive_window_size=8, rel_pos_zero_init=False)  # fmt: skip
    args.update(kwargs)
    return MViT(**args)


def test_cascade_mask_rcnn_mvitv2_b_matches_detectron2_state_dict():
    cfg = LazyConfig.load(str(REPO / "configs/COCO/cascade_mask_rcnn_mvitv2_b_in21k_100ep.py"))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model_keys(model) == reference_keys("cascade_mask_rcnn_mvitv2_b_in21k_100ep")


def _identity_norm(dim: int) -> nn.Module:
    return nn.Identity()


def test_pooling_attention_without_pooling_is_vit_attention():
    """With 1x1 identity pooling, no residual pooling and no norms, MViTv2 attention is ViT attention with the
    same relative position tables."""
    torch.manual_seed(0)
    msa = MultiScaleAttention(16, 16, num_heads=2, norm_layer=_identity_norm, pool_kernel=(1, 1),
                              residual_pooling=False, use_rel_pos=True, rel_pos_zero_init=False,
                              input_size=(5, 5)).eval()  # fmt: skip
    for pool in (msa.pool_q, msa.pool_k, msa.pool_v):
        nn.init.ones_(pool.weight)
    vit_attn = Attention(16, num_heads=2, use_rel_pos=True, input_size=(5, 5)).eval()
    vit_attn.load_state_dict({k: v for k, v in msa.state_dict().items() if not k.startswith("pool_")})
    x = torch.randn(2, 5, 5, 16)
    torch.testing.assert_close(msa(x), vit_attn(x))
    # residual pooling adds the pooled queries (head by head) before the output projection
    msa.residual_pooling = True
    q = msa.qkv(x)[..., :16]
    torch.testing.assert_close(msa(x), vit_attn(x) + msa.proj(q) - msa.proj.bias)


def test_windowed_pooling_attention_on_a_single_window_is_global():
    torch.manual_seed(0)
    args = dict(num_heads=2, stride_q=2, stride_kv=2, use_rel_pos=True, rel_pos_zero_init=False, input_size=(8, 8))
    windowed = MultiScaleAttention(16, 32, window_size=8, **args).eval()
    global_ = MultiScaleAttention(16, 32, window_size=0, **args).eval()
    global_.load_state_dict(windowed.state_dict())
    x = torch.randn(1, 8, 8, 16)
    torch.testing.assert_close(windowed(x), global_(x))
    assert windowed(x).shape == (1, 4, 4, 32)


def test_block_projects_and_pools_its_shortcut():
    block = MultiScaleBlock(8, 16, num_heads=2, stride_q=2, stride_kv=1, use_rel_pos=True, input_size=(6, 6))
    assert block.proj.weight.shape == (16, 8) and block.pool_skip.stride == 2
    assert block(torch.randn(2, 6, 6, 8)).shape == (2, 3, 3, 16)


def test_rel_pos_tables_follow_the_pooled_sizes_like_detectron2():
    # MViTv2-B at img_size 224: 56 x 56 tokens in stage 2; table size 2 * max(q, kv) - 1 (see the d2 key table)
    m = tiny_mvit(img_size=224, embed_dim=8, depth=6, last_block_indexes=(1, 2, 4, 5), adaptive_window_size=56)
    sizes = [b.attn.rel_pos_h.shape[0] for b in m.blocks]
    assert sizes == [111, 111, 55, 55, 27, 27]


def test_mvit_stage_strides_channels_and_shapes():
    m = tiny_mvit(drop_path_rate=0.2)
    shapes = m.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "scale2": (8, 4), "scale3": (16, 8), "scale4": (32, 16), "scale5": (64, 32)
    }  # fmt: skip
    out = m(torch.randn(2, 3, 64, 96))  # 16 x 24 tokens, windows of 8 in stage 2, 4 in stage 3
    for name, spec in shapes.items():
        assert out[name].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in m.parameters())


def test_mvit_rejects_bad_stage_ends():
    with pytest.raises(ValueError, match="depth - 1"):
        MViT(depth=4, last_block_indexes=(0, 1, 2, 2))
    with pytest.raises(ValueError, match="out_features"):
        tiny_mvit(out_features=("scale6",))


def _mvit_fpn() -> FPN:
    return FPN(bottom_up=tiny_mvit(), in_features=["scale2", "scale3", "scale4", "scale5"], out_channels=8,
               norm="LN", top_block=LastLevelMaxPool(), square_pad=64)  # fmt: skip


def test_pycls_in21k_checkpoint_loads_into_the_fpn_backbone(tmp_path):
    """An ImageNet-21k MViTv2 ``.pyth`` file (pycls layout: ``model_state`` with backbone keys and a classifier
    head) initialises the detector's ``backbone.bottom_up`` by name matching."""
    torch.manual_seed(3)
    pretrained = tiny_mvit()
    state = dict(pretrained.state_dict())
    state.update({"head.projection.weight": torch.randn(10, 64), "head.projection.bias": torch.randn(10)})
    path = tmp_path / "MViTv2_T_in21k.pyth"
    torch.save({"model_state": state, "epoch": 90}, path)

    model = nn.Module()
    model.backbone = _mvit_fpn()
    DetectionCheckpointer(model).load(str(path), allow_partial=True)
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(model.backbone.bottom_up.state_dict()[key], value, msg=key)
    out = model.backbone(torch.randn(1, 3, 64, 64))
    assert sorted(out) == ["p2", "p3", "p4", "p5", "p6"]
