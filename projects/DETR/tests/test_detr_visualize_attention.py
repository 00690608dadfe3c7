"""tools/visualize_attention.py: attention maps of a small DETR, drawn as PNGs."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
from PIL import Image

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(PROJECT, "configs", "detr_r18_shapes_cpu.py")
SMALL = [
    "model.transformer.d_model=32",
    "model.position_embedding.num_pos_feats=16",
    "model.transformer.dim_feedforward=64",
    "model.transformer.nhead=4",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=2",
    "model.num_queries=4",
    "dataloader.test.mapper.augmentations=[]",
]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "_detr_visualize_attention", os.path.join(PROJECT, "tools", "visualize_attention.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_maps_are_distributions(tiny_detr):
    tool = _tool()
    model = tiny_detr(num_queries=4).eval()
    maps = tool.attention_maps(model, torch.rand(3, 64, 96) * 255)
    assert maps["decoder"].shape == (4, 2, 3) and maps["encoder"].shape == (2, 3, 2, 3)
    torch.testing.assert_close(maps["decoder"].sum((1, 2)), torch.ones(4))
    torch.testing.assert_close(maps["encoder"].sum((2, 3)), torch.ones(2, 3))
    assert maps["stride"] == (32.0, 32.0)


def test_tool_writes_pngs(tmp_path):
    tool = _tool()
    torch.manual_seed(0)
    model, _ = tool.load_model(CONFIG, "", SMALL)
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pth")
    image = (np.random.default_rng(0).random((80, 112, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    written = tool.main(
        ["--config-file", CONFIG, "--weights", str(tmp_path / "weights.pth"), "--input", str(tmp_path / "img.png")]
        + ["--output", str(tmp_path / "out"), "--score-thresh", "0", "--pixels", "10,20", "100,70"]
        + ["--opts"]
        + SMALL
    )
    assert sorted(os.path.basename(p) for p in written) == ["img_decoder.png", "img_encoder.png"]
    for p in written:
        assert Image.open(p).size[0] > 100
