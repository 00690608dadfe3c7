"""DensePose R-CNN: predictor output shapes, a training step on a synthetic image, inference outputs."""

import pytest
import torch
from densepose.data import DensePoseDatasetMapper, generate_synthetic_densepose, load_densepose_coco_json
from densepose.modeling import DensePoseChartPredictor, DensePoseChartWithConfidencePredictor, DensePoseDeepLabHead
from densepose_testing import tiny_densepose_config

import libdet.data.transforms as T
from libdet.config import instantiate


@pytest.mark.parametrize(
    "uv_confidence,segm_confidence,extra",
    [
        (None, False, set()),
        ("iid_iso", False, {"sigma_2"}),
        ("indep_aniso", False, {"sigma_2", "kappa_u", "kappa_v"}),
        ("iid_iso", True, {"sigma_2", "fine_segm_confidence", "coarse_segm_confidence"}),
    ],
)
def test_predictor_output_shapes(uv_confidence, segm_confidence, extra):
    torch.manual_seed(0)
    if uv_confidence is None:
        predictor = DensePoseChartPredictor(in_channels=16, num_coarse_segm_channels=15)
        n_coarse = 15
    else:
        predictor = DensePoseChartWithConfidencePredictor(
            in_channels=16, uv_confidence=uv_confidence, segm_confidence=segm_confidence
        )
        n_coarse = 2
    out = predictor(torch.randn(3, 16, 28, 28))
    assert out.coarse_segm.shape == (3, n_coarse, 112, 112)
    for name in ("fine_segm", "u", "v"):
        assert getattr(out, name).shape == (3, 25, 112, 112)
    present = {k for k, v in vars(out).items() if v is not None} - {"coarse_segm", "fine_segm", "u", "v"}
    assert present == extra
    for name in extra:
        channels = 1 if "segm" in name else 25
        assert getattr(out, name).shape == (3, channels, 112, 112)
    if segm_confidence:
        assert float(out.fine_segm_confidence.detach().min()) > 0.01
    assert len(out[1:]) == 2 and out[0].u.shape == (1, 25, 112, 112)


def test_deeplab_head_with_nonlocal_starts_as_identity_block():
    torch.manual_seed(0)
    head = DensePoseDeepLabHead(
        in_channels=32, num_stacked_convs=2, conv_head_dim=32, aspp_channels=32, nonlocal_on=True
    )
    x = torch.randn(2, 32, 28, 28)
    aspp = head.ASPP(x)
    assert torch.allclose(head.NLBlock(aspp), aspp)  # zero-initialised GN on the block's output
    assert head(x).shape == (2, 32, 28, 28)


@pytest.fixture(scope="module")
def synthetic_batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp_synth")
    paths = generate_synthetic_densepose(str(root), num_images=2, seed=0)
    dicts = load_densepose_coco_json(paths["json_file"], paths["image_root"])
    mapper = DensePoseDatasetMapper(
        is_train=True,
        augmentations=[T.RandomFlip(prob=1.0, horizontal=True)],
        image_format="BGR",
        uv_symmetries_path=paths["uv_symmetries"],
    )
    return [mapper(d) for d in dicts]


@pytest.mark.parametrize("config", ["densepose_rcnn_R_50_FPN_s1x.py", "densepose_rcnn_R_50_FPN_DL_WC2M_s1x.py"])
def test_training_step(config, synthetic_batch):
    torch.manual_seed(0)
    model = instantiate(tiny_densepose_config(config).model)
    model.train()
    losses = model(synthetic_batch)
    uv = {"loss_densepose_UV"} if "WC" in config else {"loss_densepose_U", "loss_densepose_V"}
    assert uv | {"loss_densepose_I", "loss_densepose_S"} <= set(losses)
    for name, value in losses.items():
        assert torch.isfinite(value), name
    assert float(losses["loss_densepose_I"]) > 0  # the gt boxes are proposals with IoU 1: the branch trains
    sum(losses.values()).backward()
    grad = model.roi_heads.densepose_predictor.index_uv_lowres.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert float(model.roi_heads.decoder.p2[0].weight.grad.abs().sum()) > 0


def test_few_steps_reduce_densepose_loss(synthetic_batch):
    torch.manual_seed(0)
    model = instantiate(tiny_densepose_config().model)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    names = ("loss_densepose_U", "loss_densepose_V", "loss_densepose_I", "loss_densepose_S")
    history = []
    for _ in range(8):
        losses = model(synthetic_batch)
        history.append(sum(float(losses[n]) for n in names))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert history[-1] < history[0], history


def test_inference_outputs_per_image():
    torch.manual_seed(0)
    cfg = tiny_densepose_config()
    model = instantiate(cfg.model).eval()
    images = [{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)} for _ in range(2)]
    with torch.no_grad():
        out = model(images)
    for o in out:
        inst = o["instances"]
        assert len(inst.pred_densepose) == len(inst)
        assert inst.pred_densepose.fine_segm.shape[1:] == (25, 112, 112)
    # no detection at all: every image still gets an (empty) pred_densepose
    model.roi_heads.box_predictor.test_score_thresh = 1.1
    with torch.no_grad():
        out = model(images)
    assert all(len(o["instances"]) == 0 and len(o["instances"].pred_densepose) == 0 for o in out)
