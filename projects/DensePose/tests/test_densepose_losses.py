"""DensePose chart losses: zero on perfect estimates, hand-computed values, confidence NLLs, fake losses."""

import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from densepose.modeling import DensePoseChartLoss, DensePoseChartWithConfidenceLoss
from densepose.modeling.chart_loss import iid_isotropic_gaussian_uv_loss, indep_anisotropic_gaussian_uv_loss
from densepose.structures import DensePoseChartPredictorOutput, DensePoseDataRelative, DensePoseList

from libdet.structures import Boxes, Instances

S = 112
BIG = 1e4


def _proposals(u_gt=0.25, v_gt=0.75):
    """One image, one proposal equal to its gt box (0, 0, 64, 64); 4 torso-front points (part 2); the whole box
    is coarse part 1 (torso)."""
    full = np.ones((256, 256), np.uint8)
    rle = mask_utils.encode(np.asfortranarray(full))
    masks = [{"size": [256, 256], "counts": rle["counts"].decode("ascii")}] + [[] for _ in range(13)]
    ann = {
        "dp_x": [40.0, 100.0, 160.0, 220.0],
        "dp_y": [50.0, 120.0, 130.0, 200.0],
        "dp_I": [2.0] * 4,
        "dp_U": [u_gt] * 4,
        "dp_V": [v_gt] * 4,
        "dp_masks": masks,
    }
    inst = Instances((64, 64))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    inst.gt_classes = torch.tensor([0])
    inst.gt_densepose = DensePoseList([DensePoseDataRelative(ann)])
    return [inst]


def _perfect_outputs(u=0.25, v=0.75):
    coarse = torch.full((1, 2, S, S), -BIG)
    coarse[:, 1] = BIG
    fine = torch.full((1, 25, S, S), -BIG)
    fine[:, 2] = BIG
    return DensePoseChartPredictorOutput(
        coarse_segm=coarse, fine_segm=fine, u=torch.full((1, 25, S, S), u), v=torch.full((1, 25, S, S), v)
    )


def test_chart_loss_zero_on_perfect_estimates():
    losses = DensePoseChartLoss()(_proposals(), _perfect_outputs())
    assert set(losses) == {"loss_densepose_U", "loss_densepose_V", "loss_densepose_I", "loss_densepose_S"}
    for name, value in losses.items():
        assert float(value) == 0.0, name


def test_chart_loss_hand_computed():
    # U off by 0.5 at 4 points: smooth-L1 (beta 1) = 0.5 * 0.5^2 each, summed, times w_points 0.01
    losses = DensePoseChartLoss()(_proposals(), _perfect_outputs(u=0.75))
    assert float(losses["loss_densepose_U"]) == pytest.approx(4 * 0.125 * 0.01)
    assert float(losses["loss_densepose_V"]) == 0.0
    # uniform fine logits: cross-entropy log(25), times w_part 1
    out = _perfect_outputs()
    out.fine_segm = torch.zeros_like(out.fine_segm)
    losses = DensePoseChartLoss()(_proposals(), out)
    assert float(losses["loss_densepose_I"]) == pytest.approx(math.log(25), rel=1e-6)
    # uniform coarse logits: log(2), times w_segm 5
    out.coarse_segm = torch.zeros_like(out.coarse_segm)
    losses = DensePoseChartLoss()(_proposals(), out)
    assert float(losses["loss_densepose_S"]) == pytest.approx(5 * math.log(2), rel=1e-6)


def test_points_outside_the_proposal_are_ignored():
    proposals = _proposals()
    # the proposal covers only the left half of the gt box: points at x = 160, 220 (of 256) fall outside
    proposals[0].proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 32.0, 64.0]]))
    losses = DensePoseChartLoss()(proposals, _perfect_outputs(u=0.75))
    assert float(losses["loss_densepose_U"]) == pytest.approx(2 * 0.125 * 0.01)


def test_no_annotation_gives_zero_connected_losses():
    proposals = _proposals()
    proposals[0].gt_densepose = DensePoseList([None])
    out = _perfect_outputs()
    out.u.requires_grad_(True)
    losses = DensePoseChartLoss()(proposals, out)
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    assert out.u.grad is not None and float(out.u.grad.abs().sum()) == 0.0


def test_gaussian_nll_values():
    u, v = torch.tensor([0.3]), torch.tensor([0.6])
    tu, tv = torch.tensor([0.5]), torch.tensor([0.2])
    s = torch.tensor([0.7])
    sigma2 = math.log1p(math.exp(0.7)) + 0.01
    d2 = 0.2**2 + 0.4**2
    expected = 0.5 * (math.log(2 * math.pi) + 2 * math.log(sigma2) + d2 / sigma2)
    assert float(iid_isotropic_gaussian_uv_loss(u, v, s, tu, tv, 0.01)) == pytest.approx(expected, rel=1e-6)
    # anisotropic: covariance C = sigma2 I + r r^T; log det C / 2 + d^T C^-1 d / 2 plus detectron2's constant
    # log(2 pi) / 2 (the 2-D density's is log(2 pi): a constant offset, kept for equal loss values)
    ku, kv = torch.tensor([0.5]), torch.tensor([-0.3])
    r = np.array([0.5, -0.3])
    cov = sigma2 * np.eye(2) + np.outer(r, r)
    d = np.array([-0.2, 0.4])
    expected = 0.5 * math.log(2 * math.pi) + 0.5 * math.log(np.linalg.det(cov)) + 0.5 * d @ np.linalg.solve(cov, d)
    got = indep_anisotropic_gaussian_uv_loss(u, v, s, ku, kv, tu, tv, 0.01)
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("uv_confidence", ["iid_iso", "indep_aniso"])
def test_confidence_loss_replaces_uv_terms(uv_confidence):
    out = _perfect_outputs()
    out.sigma_2 = torch.zeros_like(out.u)
    out.kappa_u = torch.zeros_like(out.u)
    out.kappa_v = torch.zeros_like(out.u)
    losses = DensePoseChartWithConfidenceLoss(uv_confidence=uv_confidence, w_points=1.0)(_proposals(), out)
    assert set(losses) == {"loss_densepose_UV", "loss_densepose_I", "loss_densepose_S"}
    sigma2 = math.log(2) + 0.01  # softplus(0) + eps; the estimates are exact and kappa = 0
    expected = 4 * 0.5 * (math.log(2 * math.pi) + 2 * math.log(sigma2))
    assert float(losses["loss_densepose_UV"]) == pytest.approx(expected, rel=1e-5)
