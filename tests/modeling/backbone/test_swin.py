"""Swin Transformer: (shifted) window attention against a per-token reference, relative position indexes, stage
shapes, detectron2's key table and official ImageNet-22k checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.modeling.backbone import FPN, SwinTransformer
from libdet.modeling.backbone.swin import PatchMerging, SwinTransformerBlock, WindowAttention, _shifted_window_mask

from .test_vit import model_keys, reference_keys

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_swin(**kwargs) -> SwinTransformer:
    args = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.1)
    args.update(kwargs)
    return SwinTransformer(**args)


def test_cascade_mask_rcnn_swin_b_matches_detectron2_state_dict():
    cfg = LazyConfig.load(str(REPO / "configs/COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py"))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model_keys(model) == reference_keys("cascade_mask_rcnn_swin_b_in21k_50ep")


def test_relative_position_index_against_loop_reference():
    attn = WindowAttention(8, (3, 4), num_heads=2)
    index = attn.relative_position_index
    for a in range(12):
        for b in range(12):
            (ya, xa), (yb, xb) = divmod(a, 4), divmod(b, 4)
            assert index[a, b] == (ya - yb + 2) * 7 + (xa - xb + 3)
    assert index.max() == attn.relative_position_bias_table.shape[0] - 1 == 5 * 7 - 1


def _reference_block_attention(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """Per-token reference of (shifted) window attention on an H x W map that is a whole number of windows:
    token t attends to the tokens that share its window after the cyclic shift and, for shifted windows, that
    come from the same of the (up to 9) regions the shift wraps around; the bias is indexed by their offset."""
    attn, ws, s = block.attn, block.window_size, block.shift_size
    B, H, W, C = x.shape
    heads = attn.num_heads
    table = attn.relative_position_bias_table
    xn = block.norm1(x)
    q, k, v = attn.qkv(xn).view(B, H, W, 3, heads, C // heads).unbind(3)  # (B, H, W, heads, c)

    def rolled(i, n):  # coordinate after rolling by -s, and its region along the axis
        r = (i - s) % n
        return r, (0 if r < n - ws else 1 if r < n - s else 2) if s > 0 else 0

    out = torch.zeros(B, H, W, heads, C // heads)
    for i in range(H):
        for j in range(W):
            (ri, gi), (rj, gj) = rolled(i, H), rolled(j, W)
            keys = []
            for m in range(H):
                for n in range(W):
                    (rm, gm), (rn, gn) = rolled(m, H), rolled(n, W)
                    if (rm // ws, rn // ws) == (ri // ws, rj // ws) and (gm, gn) == (gi, gj):
                        keys.append((m, n, (ri % ws - rm % ws + ws - 1) * (2 * ws - 1) + (rj % ws - rn % ws + ws - 1)))
            ms, ns, idx = (torch.tensor(t) for t in zip(*keys, strict=True))
            logits = torch.einsum("bhc,bkhc->bhk", q[:, i, j] * attn.scale, k[:, ms, ns]) + table[idx].t()[None]
            out[:, i, j] = torch.einsum("bhk,bkhc->bhc", logits.softmax(-1), v[:, ms, ns])
    y = x + attn.proj(out.reshape(B, H, W, C))
    return y + block.mlp(block.norm2(y))


@pytest.mark.parametrize("shift", [0, 2])
def test_shifted_window_block_against_per_token_reference(shift):
    torch.manual_seed(0)
    block = SwinTransformerBlock(8, num_heads=2, window_size=4, shift_size=shift).eval()
    nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)
    x = torch.randn(2, 8, 8, 8)
    mask = _shifted_window_mask(8, 8, 4, 2, x.device, x.dtype)
    torch.testing.assert_close(block(x, mask), _reference_block_attention(block, x), atol=1e-5, rtol=1e-4)


def test_shifted_window_mask_separates_wrapped_regions():
    mask = _shifted_window_mask(8, 8, 4, 2, torch.device("cpu"), torch.float32)
    assert mask.shape == (4, 16, 16)
    assert mask[0].abs().sum() == 0  # the top-left window holds one region only
    assert set(mask[3].unique().tolist()) == {-100.0, 0.0}  # the bottom-right window holds four
    assert torch.equal(mask, mask.transpose(1, 2))


def test_patch_merging_channel_order():
    merge = PatchMerging(1, norm_layer=_identity_norm)
    x = torch.arange(16.0).view(1, 4, 4, 1)
    merge.reduction = nn.Identity()
    out = merge(x)  # (0,0), (1,0), (0,1), (1,1) of each 2x2 block
    assert out.shape == (1, 2, 2, 4)
    assert out[0, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]
    assert out[0, 1, 1].tolist() == [10.0, 14.0, 11.0, 15.0]


def _identity_norm(dim: int) -> nn.Module:
    return nn.Identity()


def test_swin_stage_strides_channels_and_odd_sizes():
    m = tiny_swin()
    shapes = m.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "p0": (8, 4), "p1": (16, 8), "p2": (32, 16), "p3": (64, 32)
    }  # fmt: skip
    out = m(torch.randn(2, 3, 70, 100))  # padded to whole patches and windows inside
    for name, spec in shapes.items():
        assert out[name].shape == (2, spec.channels, -(-70 // spec.stride), -(-100 // spec.stride)), name
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in m.parameters())


def test_frozen_stages_and_activation_checkpointing():
    m = tiny_swin(frozen_stages=2)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("patch_embed.", "layers.0.")) for n in frozen)
    torch.manual_seed(0)
    plain, ckpt = tiny_swin(drop_path_rate=0.0), tiny_swin(drop_path_rate=0.0, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    plain(x)["p3"].sum().backward()
    ckpt(x)["p3"].sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_official_in22k_checkpoint_loads_into_the_fpn_backbone(tmp_path):
    """An official Swin ImageNet-22k file (``{"model": ...}`` with backbone keys, a final ``norm`` and a
    classifier ``head``) initialises ``backbone.bottom_up`` with name matching."""
    torch.manual_seed(4)
    pretrained = tiny_swin()
    state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("norm")}
    state.update({"norm.weight": torch.randn(64), "norm.bias": torch.randn(64), "head.weight": torch.randn(5, 64)})
    path = tmp_path / "swin_tiny_patch4_window4_22k.pth"
    torch.save({"model": state}, path)

    model = nn.Module()
    model.backbone = FPN(bottom_up=tiny_swin(), in_features=["p0", "p1", "p2", "p3"], out_channels=8, norm="LN")
    DetectionCheckpointer(model).load(f"{path}?matching_heuristics=True", allow_partial=True)
    loaded = model.backbone.bottom_up.state_dict()
    for key, value in state.items():
        if key in loaded:
            torch.testing.assert_close(loaded[key], value, msg=key)
    assert sum(key in loaded for key in state) == len(state) - 3
    assert sorted(model.backbone(torch.randn(1, 3, 64, 64))) == ["p2", "p3", "p4", "p5"]
