"""ViT, the simple feature pyramid and their building blocks (window attention, relative and absolute position
embeddings, layer-wise lr decay), against straightforward references; detectron2 key tables; MAE checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.modeling.backbone import LastLevelMaxPool, SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate
from libdet.modeling.backbone.utils import (
    DropPath,
    add_decomposed_rel_pos,
    get_abs_pos,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from libdet.modeling.backbone.vit import Attention, Block, vit_lr_decay
from libdet.solver import get_default_optimizer_params

REPO = Path(__file__).resolve().parents[3]
D2_KEYS = Path(__file__).resolve().parents[1] / "d2_keys"


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (D2_KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())))
    return rows


def model_keys(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def tiny_vit(**kwargs) -> ViT:
    args = dict(
        img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=2, window_size=4, window_block_indexes=[0, 1]
    )
    args.update(kwargs)
    return ViT(use_rel_pos=True, rel_pos_zero_init=False, **args)


def test_mask_rcnn_vitdet_b_matches_detectron2_state_dict():
    cfg = LazyConfig.load(str(REPO / "configs/COCO/mask_rcnn_vitdet_b_100ep.py"))
    with torch.device("meta"):  # full size ViT-B: keys and shapes only
        model = instantiate(cfg.model)
    assert model_keys(model) == reference_keys("mask_rcnn_vitdet_b_100ep")  # keys, shapes and order


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 7, 10, 3)
    windows, pad_hw = window_partition(x, 4)
    assert pad_hw == (8, 12) and windows.shape == (2 * 2 * 3, 4, 4, 3)
    # window (row 0, col 1) of image 1 holds x[1, 0:4, 4:8]
    torch.testing.assert_close(windows[1 * 6 + 1], x[1, 0:4, 4:8])
    # padded cells are zero
    assert windows[1 * 6 + 5][3:, :].abs().sum() == 0 and windows[5][:, 2:].abs().sum() == 0
    torch.testing.assert_close(window_unpartition(windows, 4, pad_hw, (7, 10)), x)


def _paired_blocks(window_size: int, grid: int) -> tuple[Block, Block]:
    """A windowed and a global block with the same weights (rel-pos tables sized for the window)."""
    torch.manual_seed(0)
    windowed = Block(32, 2, use_rel_pos=True, rel_pos_zero_init=False, window_size=window_size)
    global_ = Block(32, 2, use_rel_pos=True, rel_pos_zero_init=False, window_size=0, input_size=(grid, grid))
    global_.load_state_dict(windowed.state_dict())
    return windowed.eval(), global_.eval()


def test_windowed_attention_equals_global_attention_on_a_single_window():
    windowed, global_ = _paired_blocks(window_size=6, grid=6)
    x = torch.randn(2, 6, 6, 32)
    torch.testing.assert_close(windowed(x), global_(x))


def test_windowed_attention_is_global_attention_per_window():
    windowed, global_ = _paired_blocks(window_size=4, grid=4)
    x = torch.randn(1, 8, 12, 32)
    out = windowed(x)
    for i in range(2):
        for j in range(3):
            patch = x[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
            torch.testing.assert_close(out[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4], global_(patch))


def _reference_rel_pos(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """Loop reference: offset (q * sk - k * sq) in units of the finer axis, shifted to be >= 0."""
    q_scale, k_scale = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    out = torch.empty(q_size, k_size, table.shape[1])
    for i in range(q_size):
        for j in range(k_size):
            out[i, j] = table[int(i * q_scale - j * k_scale + (k_size - 1) * k_scale)]
    return out


@pytest.mark.parametrize("q_size,k_size", [(7, 7), (14, 14), (8, 4), (4, 8)])
def test_get_rel_pos_against_loop_reference(q_size, k_size):
    table = torch.randn(2 * max(q_size, k_size) - 1, 5)
    torch.testing.assert_close(get_rel_pos(q_size, k_size, table), _reference_rel_pos(q_size, k_size, table))


def test_rel_pos_table_of_another_window_size_is_interpolated():
    # A table made for 7x7 windows (13 offsets) used in 14x14 windows: resized to 27 offsets. A linear ramp
    # stays a linear ramp over the same range, so offsets keep their order and the ends keep their values.
    ramp = torch.linspace(-1.0, 1.0, 13)[:, None].repeat(1, 4)
    rel = get_rel_pos(14, 14, ramp)
    assert rel.shape == (14, 14, 4)
    offsets = rel[:, :, 0]  # offsets[i, j] depends only on i - j and grows with it
    torch.testing.assert_close(offsets[13, 0], torch.tensor(1.0))
    torch.testing.assert_close(offsets[0, 13], torch.tensor(-1.0))
    assert torch.all(offsets[1:, 0] > offsets[:-1, 0])
    torch.testing.assert_close(offsets[5, 2], offsets[9, 6])
    # explicit reference of F.interpolate(linear, align_corners=False) on the table
    resized = F.interpolate(ramp.t()[None], size=27, mode="linear").squeeze(0).t()
    torch.testing.assert_close(rel, _reference_rel_pos(14, 14, resized))


def test_windowed_and_global_blocks_size_their_tables_like_detectron2():
    vit = ViT(img_size=1024, patch_size=16, embed_dim=64, depth=3, num_heads=1, window_size=14,
              window_block_indexes=[0, 2], use_rel_pos=True)  # fmt: skip
    assert vit.blocks[0].attn.rel_pos_h.shape == (27, 64)  # 2 * 14 - 1
    assert vit.blocks[1].attn.rel_pos_w.shape == (127, 64)  # global: 2 * (1024 / 16) - 1


def test_add_decomposed_rel_pos_against_loop_reference():
    torch.manual_seed(0)
    q_hw, k_hw, C = (3, 4), (2, 5), 6
    q = torch.randn(2, 12, C)
    attn = torch.randn(2, 12, 10)
    rel_h, rel_w = torch.randn(5, C), torch.randn(9, C)
    out = add_decomposed_rel_pos(attn, q, rel_h, rel_w, q_hw, k_hw)
    Rh, Rw = get_rel_pos(3, 2, rel_h), get_rel_pos(4, 5, rel_w)
    expected = attn.clone()
    for b in range(2):
        for qi in range(12):
            qy, qx = divmod(qi, 4)
            for ki in range(10):
                ky, kx = divmod(ki, 5)
                expected[b, qi, ki] += q[b, qi] @ Rh[qy, ky] + q[b, qi] @ Rw[qx, kx]
    torch.testing.assert_close(out, expected)


def test_attention_without_rel_pos_is_standard_multi_head_attention():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4).eval()
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    mha.in_proj_weight.data.copy_(attn.qkv.weight)
    mha.in_proj_bias.data.copy_(attn.qkv.bias)
    mha.out_proj.load_state_dict(attn.proj.state_dict())
    x = torch.randn(2, 3, 5, 16)
    ref = mha(x.flatten(1, 2), x.flatten(1, 2), x.flatten(1, 2), need_weights=False)[0].view(2, 3, 5, 16)
    torch.testing.assert_close(attn(x), ref)


def test_get_abs_pos_drops_cls_token_and_keeps_a_matching_grid():
    pos = torch.randn(1, 1 + 16, 8)
    out = get_abs_pos(pos, True, (4, 4))
    torch.testing.assert_close(out, pos[:, 1:].reshape(1, 4, 4, 8))


def test_get_abs_pos_interpolates_bicubically_to_the_input_grid():
    pos = torch.randn(1, 1 + 14 * 14, 8)  # MAE ViT: 224 / 16 = 14 x 14 + class token
    out = get_abs_pos(pos, True, (6, 10))
    grid = pos[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 10), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected)
    constant = torch.full((1, 196, 3), 0.5)  # a constant embedding stays constant
    torch.testing.assert_close(get_abs_pos(constant, False, (5, 9)), torch.full((1, 5, 9, 3), 0.5))


def test_get_abs_pos_rejects_non_square_grids():
    with pytest.raises(ValueError, match="square grid"):
        get_abs_pos(torch.randn(1, 1 + 16, 8), False, (4, 4))  # cls token not declared: 17 positions


def test_vit_runs_on_inputs_of_another_size_than_pretraining():
    vit = tiny_vit(pretrain_img_size=32).eval()  # 4 x 4 + cls positions
    assert vit.pos_embed.shape == (1, 17, 32)
    out = vit(torch.randn(1, 3, 40, 56))["last_feat"]
    assert out.shape == (1, 32, 5, 7) and torch.isfinite(out).all()


def test_simple_feature_pyramid_strides_and_shapes():
    sfp = SimpleFeaturePyramid(
        net=tiny_vit(patch_size=16, img_size=128),
        in_feature="last_feat",
        out_channels=16,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=LastLevelMaxPool(),
        norm="LN",
        square_pad=128,
    )
    shapes = sfp.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "p2": (16, 4), "p3": (16, 8), "p4": (16, 16), "p5": (16, 32), "p6": (16, 64)
    }  # fmt: skip
    assert sfp.size_divisibility == 32
    assert sfp.padding_constraints == {"size_divisibility": 32, "square_size": 128}
    out = sfp(torch.randn(2, 3, 128, 96))
    for name, spec in shapes.items():
        assert out[name].shape == (2, 16, -(-128 // spec.stride), -(-96 // spec.stride)), name
    # detectron2 registers the pyramid branches before the ViT
    assert next(iter(sfp.state_dict())).startswith("simfp_2.0.")


def test_simple_feature_pyramid_rejects_bad_scales():
    with pytest.raises(ValueError, match="twice"):
        SimpleFeaturePyramid(net=tiny_vit(), in_feature="last_feat", out_channels=8, scale_factors=(4.0, 1.0))
    with pytest.raises(ValueError, match="not supported"):
        SimpleFeaturePyramid(net=tiny_vit(), in_feature="last_feat", out_channels=8, scale_factors=(8.0, 4.0))
    with pytest.raises(ValueError, match="in_feature"):
        SimpleFeaturePyramid(net=tiny_vit(), in_feature="res5", out_channels=8, scale_factors=(1.0,))


def test_residual_block_starts_as_identity_and_drop_path_is_identity_in_eval():
    vit = tiny_vit(residual_block_indexes=[2])
    res = vit.blocks[2].residual
    assert res.norm3.weight.abs().sum() == 0  # not reset by the transformer init
    x = torch.randn(1, 32, 4, 4)
    torch.testing.assert_close(res(x), x)
    dp = DropPath(0.5)
    y = torch.randn(1000, 4)
    assert torch.equal(dp.eval()(y), y)
    kept = dp.train()(torch.ones(1000, 4))
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 350 < (kept[:, 0] > 0).sum() < 650


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny_vit()
    ckpt = tiny_vit(use_act_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32)
    plain(x)["last_feat"].square().sum().backward()
    ckpt(x)["last_feat"].square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_vit_lr_decay_rates_per_layer():
    rate, n = 0.7, 12
    assert get_vit_lr_decay_rate("backbone.net.pos_embed", rate, n) == pytest.approx(rate**13)
    assert get_vit_lr_decay_rate("backbone.net.patch_embed.proj.weight", rate, n) == pytest.approx(rate**13)
    assert get_vit_lr_decay_rate("backbone.net.blocks.0.attn.qkv.weight", rate, n) == pytest.approx(rate**12)
    assert get_vit_lr_decay_rate("backbone.net.blocks.11.mlp.fc2.bias", rate, n) == pytest.approx(rate)
    assert get_vit_lr_decay_rate("backbone.net.blocks.3.residual.conv1.weight", rate, n) == 1.0
    assert get_vit_lr_decay_rate("backbone.simfp_2.0.weight", rate, n) == 1.0
    assert get_vit_lr_decay_rate("roi_heads.box_predictor.cls_score.weight", rate, n) == 1.0
    assert vit_lr_decay(lr_decay_rate=rate, num_layers=n)("backbone.net.blocks.5.norm1.weight") == pytest.approx(
        rate**7
    )


def test_layerwise_lr_decay_in_optimizer_param_groups():
    model = nn.Module()
    model.backbone = SimpleFeaturePyramid(
        net=tiny_vit(depth=2, window_block_indexes=[0]), in_feature="last_feat", out_channels=8, scale_factors=(1.0,)
    )
    groups = get_default_optimizer_params(
        model, base_lr=1.0, weight_decay=0.1, lr_factor_func=vit_lr_decay(lr_decay_rate=0.5, num_layers=2)
    )
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    net = model.backbone.net
    assert lr_of[id(net.pos_embed)] == pytest.approx(0.125)
    assert lr_of[id(net.patch_embed.proj.weight)] == pytest.approx(0.125)
    assert lr_of[id(net.blocks[0].attn.qkv.weight)] == pytest.approx(0.25)
    assert lr_of[id(net.blocks[1].mlp.fc1.bias)] == pytest.approx(0.5)
    assert lr_of[id(model.backbone.simfp_3[0].weight)] == pytest.approx(1.0)


def _vitdet(pretrain_img_size: int = 64) -> SimpleFeaturePyramid:
    return SimpleFeaturePyramid(
        net=tiny_vit(patch_size=16, pretrain_img_size=pretrain_img_size),
        in_feature="last_feat",
        out_channels=8,
        scale_factors=(2.0, 1.0, 0.5),
        top_block=LastLevelMaxPool(),
    )


def test_mae_checkpoint_loads_with_matching_heuristics(tmp_path):
    """An MAE pre-training checkpoint: ViT keys without prefix, a class token, a final norm and a 224-px-style
    position grid (here 4 x 4 + cls); the detector interpolates the grid at forward time."""
    torch.manual_seed(1)
    mae = tiny_vit(patch_size=16, pretrain_img_size=64)
    state = {k: v for k, v in mae.state_dict().items() if ".rel_pos_" not in k}  # MAE has no rel-pos tables
    state.update(cls_token=torch.randn(1, 1, 32), **{"norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)})
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": state}, path)

    model = nn.Module()
    model.backbone = _vitdet()
    DetectionCheckpointer(model).load(f"{path}?matching_heuristics=True", allow_partial=True)
    loaded = model.backbone.net.state_dict()
    for key, value in state.items():
        if key in loaded:
            torch.testing.assert_close(loaded[key], value, msg=key)
    assert {"pos_embed", "blocks.2.attn.qkv.weight", "patch_embed.proj.weight"} <= set(state) & set(loaded)
    out = model.backbone(torch.randn(1, 3, 96, 128))  # 6 x 8 patch grid from the 4 x 4 embeddings
    assert out["p4"].shape == (1, 8, 6, 8) and out["p6"].shape == (1, 8, 2, 2)


def test_detectron2_vitdet_checkpoint_round_trip(tmp_path):
    src = nn.Module()
    src.backbone = _vitdet()
    path = tmp_path / "model_final.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = nn.Module()
    dst.backbone = _vitdet()
    DetectionCheckpointer(dst).load(str(path))
    for (k, v), w in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def test_simple_feature_pyramid_rejects_a_top_block_without_input():
    with pytest.raises(ValueError, match="top_block reads 'p5'"):
        SimpleFeaturePyramid(
            net=tiny_vit(), in_feature="last_feat", out_channels=8, scale_factors=(1.0,), top_block=LastLevelMaxPool()
        )


def test_detectron2_model_zoo_pickle_loads(tmp_path):
    """detectron2's model-zoo files (``model_final_*.pkl``): ``{"model": {name: numpy array}, "__author__": ...}``."""
    import pickle

    src = nn.Module()
    src.backbone = _vitdet()
    path = tmp_path / "model_final_vitdet.pkl"
    with open(path, "wb") as f:
        state = {k: v.numpy() for k, v in src.state_dict().items()}
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False}, f)
    dst = nn.Module()
    dst.backbone = _vitdet()
    DetectionCheckpointer(dst).load(str(path))
    for (k, v), w in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
