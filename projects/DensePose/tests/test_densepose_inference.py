"""Converters of DensePose outputs, the flip of outputs, flip TTA and apply_net on a synthetic image."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from densepose.inference import (
    DensePoseHFlipTTA,
    chart_output_to_masks,
    chart_output_to_results,
    hflip_chart_output,
)
from densepose.structures import DensePoseChartPredictorOutput, DensePoseTransformData
from densepose_testing import tiny_densepose_config

from libdet.config import instantiate
from libdet.structures import Boxes

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mirror_tables():
    grid = torch.arange(256, dtype=torch.float32) / 255
    return DensePoseTransformData(
        u_transforms=(1 - grid)[None, None, :].expand(24, 256, 256).clone(),
        v_transforms=grid[None, :, None].expand(24, 256, 256).clone(),
    )


def _output():
    """One box whose left half is part 3 (right hand) with U = 0.2, V = 0.6, and whose right half is background."""
    s = 8
    coarse = torch.zeros(1, 2, s, s)
    coarse[0, 1, :, : s // 2] = 5.0
    coarse[0, 0, :, s // 2 :] = 5.0
    fine = torch.zeros(1, 25, s, s)
    fine[0, 3] = 5.0
    u = torch.zeros(1, 25, s, s)
    v = torch.zeros(1, 25, s, s)
    u[0, 3], v[0, 3] = 0.2, 0.6
    return DensePoseChartPredictorOutput(coarse_segm=coarse, fine_segm=fine, u=u, v=v)


def test_chart_results_and_masks():
    boxes = Boxes(torch.tensor([[10.0, 5.0, 26.0, 13.0]]))  # 16 x 8 box
    (result,) = chart_output_to_results(_output(), boxes)
    assert result.labels.shape == (8, 16) and result.uv.shape == (2, 8, 16)
    assert (result.labels[:, :8] == 3).all() and (result.labels[:, 8:] == 0).all()
    assert torch.allclose(result.uv[0, :, :8], torch.tensor(0.2)) and (result.uv[:, :, 8:] == 0).all()
    assert torch.allclose(result.uv[1, :, :8], torch.tensor(0.6))
    masks = chart_output_to_masks(_output(), boxes, (20, 30)).tensor
    assert masks.shape == (1, 20, 30)
    assert masks[0, 5:13, 10:18].all() and int(masks.sum()) == 8 * 8


def test_hflip_of_outputs():
    flipped = hflip_chart_output(_output(), _mirror_tables())
    (result,) = chart_output_to_results(flipped, Boxes(torch.tensor([[0.0, 0.0, 16.0, 8.0]])))
    # the person is now in the right half, the right hand became the left hand, U mirrored, V kept
    assert (result.labels[:, 8:] == 4).all() and (result.labels[:, :8] == 0).all()
    assert torch.allclose(result.uv[0, :, 8:], torch.tensor(1 - int(0.2 * 255) / 255))
    assert torch.allclose(result.uv[1, :, 8:], torch.tensor(int(0.6 * 255) / 255))
    twice = hflip_chart_output(flipped, _mirror_tables())
    assert torch.equal(twice.fine_segm, _output().fine_segm)


def test_flip_tta_runs_and_keeps_detections():
    torch.manual_seed(0)
    model = instantiate(tiny_densepose_config().model).eval()
    image = {"image": torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8)}
    with torch.no_grad():
        plain = model([image])[0]["instances"]
    tta = DensePoseHFlipTTA(model=model, transform_data=_mirror_tables())
    out = tta([image])[0]["instances"]
    assert len(out) == len(plain) > 0
    assert torch.allclose(out.pred_boxes.tensor, plain.pred_boxes.tensor)
    assert out.pred_densepose.u.shape == plain.pred_densepose.u.shape
    assert not torch.allclose(out.pred_densepose.fine_segm, plain.pred_densepose.fine_segm)


def _apply_net():
    spec = importlib.util.spec_from_file_location("_densepose_apply_net", os.path.join(PROJECT, "apply_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# shrinks the R50 s1x model (as tiny_densepose_config does) from the command line
TINY = [
    "model.backbone.bottom_up.stem.out_channels=16",
    "model.backbone.bottom_up.stages.depth=18",
    "+model.backbone.bottom_up.stages.stem_out_channels=16",
    "+model.backbone.bottom_up.stages.res2_out_channels=16",
    "~model.backbone.bottom_up.stages.stride_in_1x1",
    "model.backbone.out_channels=32",
    "model.roi_heads.box_head.fc_dims=[32,32]",
    "model.roi_heads.box_predictor.input_shape.channels=32",
    "model.roi_heads.decoder.conv_dims=32",
    "model.roi_heads.decoder.num_classes=32",
    "model.roi_heads.densepose_head.num_stacked_convs=1",
    "model.roi_heads.densepose_head.conv_head_dim=32",
    "+model.roi_heads.box_predictor.test_topk_per_image=3",
    "dataloader.test.mapper.augmentations=[{_target_:libdet.data.transforms.ResizeShortestEdge,short_edge_length:64,max_size:96}]",
]


@pytest.mark.parametrize("command", ["dump", "show"])
def test_apply_net(command, tmp_path):
    from densepose.data import generate_synthetic_densepose

    paths = generate_synthetic_densepose(str(tmp_path / "data"), num_images=1, seed=0)
    image = os.path.join(paths["image_root"], "00001.png")
    config = os.path.join(PROJECT, "configs", "densepose_rcnn_R_50_FPN_s1x.py")
    torch.manual_seed(0)
    if command == "dump":
        out = str(tmp_path / "results.pt")
        _apply_net().main(["dump", config, "", image, "--output", out, "--min-score", "0", *TINY])
        (record,) = torch.load(out, weights_only=True)
        assert record["file_name"] == image and record["image_size"] == [128, 128]
        n = len(record["scores"])
        assert n > 0 and record["pred_boxes_XYXY"].shape == (n, 4) and len(record["pred_densepose"]) == n
        for box, dp in zip(record["pred_boxes_XYXY"], record["pred_densepose"]):
            w = max(int(box[2] - box[0]), 1)
            h = max(int(box[3] - box[1]), 1)
            assert dp["labels"].shape == (h, w) and dp["uv"].shape == (2, h, w) and dp["labels"].dtype == torch.uint8
    else:
        from PIL import Image

        out = str(tmp_path / "drawing.png")
        vis = "dp_segm,dp_u,dp_contour,bbox"
        _apply_net().main(["show", config, "", image, vis, "--output", out, "--min-score", "0", *TINY])
        drawing = np.asarray(Image.open(out))
        original = np.asarray(Image.open(image).convert("RGB"))
        assert drawing.shape == (128, 128, 3) and (drawing != original).any()
