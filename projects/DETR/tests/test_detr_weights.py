"""Weight conversion: round trips between the layouts, and numerical parity with Hugging Face's DETR."""

from __future__ import annotations

import pytest
import torch
from detr.weight_conversion import (
    COCO_UNUSED_LOGIT_BIAS,
    coco_contiguous_to_id,
    detect_layout,
    hf_to_libdet,
    libdet_to_hf,
    libdet_to_official,
    load_state_dict_file,
    official_to_libdet,
)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _randomised(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict with every tensor random (so that a swapped key cannot go unnoticed)."""
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.rand(v.shape, generator=g) + 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return sd


@pytest.mark.parametrize("learned_pos", [False, True])
def test_official_round_trip(tiny_detr, learned_pos):
    model = tiny_detr(num_classes=5, learned_pos=learned_pos)
    sd = _randomised(model)
    official = libdet_to_official(sd, coco_classes=False)
    assert detect_layout(official) == "official"
    assert "backbone.0.body.layer1.0.downsample.1.running_var" in official
    assert "backbone.0.body.bn1.weight" in official
    assert ("backbone.1.row_embed.weight" in official) == learned_pos
    _assert_same(official_to_libdet(official, coco_classes=False), sd)


@pytest.mark.parametrize("backbone", ["native", "timm"])
@pytest.mark.parametrize("layout", ["v4", "v5"])
def test_hf_round_trip(tiny_detr, backbone, layout):
    sd = _randomised(tiny_detr(num_classes=5, learned_pos=True))
    hf = libdet_to_hf(sd, coco_classes=False, backbone=backbone, layout=layout)
    assert detect_layout(hf) == "hf"
    if layout == "v4":
        assert "model.encoder.layers.0.self_attn.out_proj.weight" in hf
        assert "model.decoder.layers.1.fc1.weight" in hf
        assert "model.backbone.position_embedding.row_embeddings.weight" in hf
    else:
        assert "model.encoder.layers.0.self_attn.o_proj.weight" in hf
        assert "model.decoder.layers.1.mlp.fc1.weight" in hf
    first_conv = "embedder.embedder.convolution.weight" if backbone == "native" else "conv1.weight"
    prefix = "model.backbone.conv_encoder.model." if layout == "v4" else "model.backbone.model."
    assert prefix + first_conv in hf
    _assert_same(hf_to_libdet(hf, coco_classes=False), sd)


def test_coco_class_rows(tiny_detr):
    sd = _randomised(tiny_detr(num_classes=80))
    official = libdet_to_official(sd)
    ids = coco_contiguous_to_id()
    assert official["class_embed.weight"].shape[0] == 92
    assert torch.equal(official["class_embed.weight"][ids[3]], sd["class_embed.weight"][3])
    assert torch.equal(official["class_embed.bias"][91], sd["class_embed.bias"][80])  # no object stays last
    unused = sorted(set(range(91)) - set(ids))
    assert len(unused) == 11 and (official["class_embed.bias"][unused] == COCO_UNUSED_LOGIT_BIAS).all()
    _assert_same(official_to_libdet(official), sd)
    _assert_same(hf_to_libdet(libdet_to_hf(sd)), sd)
    with pytest.raises(ValueError, match="92"):
        official_to_libdet(libdet_to_official(sd, coco_classes=False))


def test_load_official_checkpoint_file(tiny_detr, tmp_path):
    import argparse

    sd = libdet_to_official(_randomised(tiny_detr(num_classes=5)), coco_classes=False)
    path = tmp_path / "detr-official.pth"
    # the official checkpoints also carry the training arguments as a Namespace
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-4), "epoch": 499}, path)
    _assert_same(load_state_dict_file(str(path)), sd)


def _small_hf_detr(num_labels: int, learned: bool):
    transformers = pytest.importorskip("transformers", reason="Hugging Face parity needs `transformers` (test extra)")
    backbone_config = transformers.ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[32, 64, 128, 256],
        depths=[3, 4, 6, 3],
        layer_type="bottleneck",
        out_features=["stage4"],
    )
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone_config,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=num_labels,
        position_embedding_type="learned" if learned else "sine",
    )
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(config).eval()
    # random, non-trivial frozen BatchNorm statistics, so that the backbone mapping is really exercised
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "weight", "bias")) and "backbone" in name:
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.4 - 0.2 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("running_var") and "backbone" in name:
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("learned", [False, True])
def test_hf_parity(tiny_detr, learned):
    """A random-init transformers DetrForObjectDetection converted to libdet gives the same logits and boxes."""
    hf = _small_hf_detr(num_labels=5, learned=learned)
    model = tiny_detr(num_classes=5, learned_pos=learned).eval()
    model.load_state_dict(hf_to_libdet(hf.state_dict(), coco_classes=False))
    # two images of different sizes: the padding mask must be handled identically
    torch.manual_seed(3)
    images = [torch.rand(3, 96, 128) * 255, torch.rand(3, 128, 80) * 255]
    images_norm, mask = model.preprocess_image([{"image": im} for im in images])
    with torch.no_grad():
        logits, boxes, _ = model.predict(images_norm.tensor, mask)
        out = hf(pixel_values=images_norm.tensor, pixel_mask=(~mask).long())
    torch.testing.assert_close(logits[-1], out.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(boxes[-1], out.pred_boxes, atol=1e-4, rtol=1e-4)
    # and back: the libdet weights converted to the installed transformers' layout load strictly
    import transformers

    layout = "v4" if int(transformers.__version__.split(".")[0]) < 5 else "v5"
    hf.load_state_dict(libdet_to_hf(model.state_dict(), coco_classes=False, layout=layout), strict=True)


def test_convert_weights_tool_round_trip(tiny_detr, tmp_path):
    import importlib.util
    import os

    tool_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "convert_weights.py")
    spec = importlib.util.spec_from_file_location("_detr_convert_weights", tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    sd = _randomised(tiny_detr(num_classes=80))
    torch.save({"model": sd}, tmp_path / "libdet.pth")
    tool.main([str(tmp_path / "libdet.pth"), str(tmp_path / "official.pth"), "--to", "official"])
    official = load_state_dict_file(str(tmp_path / "official.pth"))
    assert official["class_embed.weight"].shape[0] == 92 and "backbone.0.body.conv1.weight" in official
    tool.main([str(tmp_path / "official.pth"), str(tmp_path / "back.pth")])
    _assert_same(load_state_dict_file(str(tmp_path / "back.pth")), sd)
    if importlib.util.find_spec("safetensors") is not None:
        tool.main(
            [str(tmp_path / "official.pth"), str(tmp_path / "hf.safetensors"), "--to", "hf", "--hf-backbone", "timm"]
        )
        hf = load_state_dict_file(str(tmp_path / "hf.safetensors"))
        assert "model.backbone.conv_encoder.model.layer1.0.conv1.weight" in hf
        tool.main([str(tmp_path / "hf.safetensors"), str(tmp_path / "back2.pth")])
        _assert_same(load_state_dict_file(str(tmp_path / "back2.pth")), sd)
