"""DensePose chart losses (detectron2's ``DensePoseChartLoss`` and ``DensePoseChartWithConfidenceLoss``).

The annotated points of each box are mapped into the estimate's ``S x S`` grid over the *proposal* box; estimates
are bilinearly sampled there. Losses: U and V smooth-L1 at the foreground points (``loss_densepose_U/V``, sums
weighted by ``w_points``), fine-part cross-entropy at all points inside the proposal (``loss_densepose_I``), and
coarse-segmentation cross-entropy against the ``dp_masks`` map resampled into the proposal box
(``loss_densepose_S``). With UV confidences the two U/V terms become one Gaussian negative log-likelihood,
``loss_densepose_UV``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from libdet.structures import Instances

from ..structures import DensePoseChartPredictorOutput
from .chart_predictor import UV_CONFIDENCE_TYPES

__all__ = [
    "PackedChartAnnotations",
    "pack_chart_annotations",
    "resample_data",
    "DensePoseChartLoss",
    "DensePoseChartWithConfidenceLoss",
    "iid_isotropic_gaussian_uv_loss",
    "indep_anisotropic_gaussian_uv_loss",
]


@dataclass
class PackedChartAnnotations:
    """The DensePose ground truth of a batch of proposals, flattened. ``P`` points over ``B`` boxes with
    DensePose annotations.

    Attributes:
        x_gt, y_gt: ``(P,)`` point coordinates in ``[0, 256]`` over the gt box.
        u_gt, v_gt: ``(P,)`` chart coordinates; fine_segm_labels_gt: ``(P,)`` long parts 1..24.
        coarse_segm_gt: ``(B, 256, 256)`` coarse-part maps over the gt boxes.
        bbox_xywh_gt, bbox_xywh_est: ``(B, 4)`` gt and proposal boxes (XYWH).
        point_bbox_indices: ``(P,)`` index of each point's box among all proposals (the predictor's rows).
        bbox_indices: ``(B,)`` index of each annotated box among all proposals.
    """

    x_gt: torch.Tensor
    y_gt: torch.Tensor
    u_gt: torch.Tensor
    v_gt: torch.Tensor
    fine_segm_labels_gt: torch.Tensor
    coarse_segm_gt: torch.Tensor
    bbox_xywh_gt: torch.Tensor
    bbox_xywh_est: torch.Tensor
    point_bbox_indices: torch.Tensor
    bbox_indices: torch.Tensor


def _xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def pack_chart_annotations(proposals: list[Instances]) -> PackedChartAnnotations | None:
    """Flatten the ``gt_densepose`` of the proposals (``proposal_boxes``, ``gt_boxes``, ``gt_densepose``) of all
    images, in the order the predictor saw them; None when no proposal has a DensePose annotation."""
    keys = ("x", "y", "u", "v", "i")
    acc = {k: [] for k in keys}
    segm, box_gt, box_est, point_idx, box_idx = [], [], [], [], []
    offset = 0
    for props in proposals:
        if len(props) and props.has("gt_densepose"):
            gt_boxes = _xyxy_to_xywh(props.gt_boxes.tensor)
            est_boxes = _xyxy_to_xywh(props.proposal_boxes.tensor)
            for k, dp in enumerate(props.gt_densepose):
                if dp is None:
                    continue
                for key in keys:
                    acc[key].append(getattr(dp, key))
                n = dp.x.numel()
                point_idx.append(torch.full((n,), offset + k, dtype=torch.long))
                box_idx.append(offset + k)
                segm.append(dp.segm)
                box_gt.append(gt_boxes[k])
                box_est.append(est_boxes[k])
        offset += len(props)
    if not box_idx:
        return None
    device = box_gt[0].device
    cat = {k: torch.cat(v).to(device) for k, v in acc.items()}
    return PackedChartAnnotations(
        x_gt=cat["x"],
        y_gt=cat["y"],
        u_gt=cat["u"],
        v_gt=cat["v"],
        fine_segm_labels_gt=cat["i"].long(),
        coarse_segm_gt=torch.stack(segm).to(device),
        bbox_xywh_gt=torch.stack(box_gt),
        bbox_xywh_est=torch.stack(box_est),
        point_bbox_indices=torch.cat(point_idx).to(device),
        bbox_indices=torch.tensor(box_idx, dtype=torch.long, device=device),
    )


def _linear_interpolation(v_norm, v0_src, size_src, v0_dst, size_dst, size_z):
    """Grid cells (lo, hi), weight of hi, and validity of points ``v0_src + v_norm * size_src / 256`` in a grid of
    ``size_z`` cells spanning ``[v0_dst, v0_dst + size_dst)``."""
    v = v0_src + v_norm * size_src / 256.0
    valid = (v - v0_dst >= 0) & (v - v0_dst < size_dst)
    v_grid = (v - v0_dst) * size_z / size_dst
    v_lo = v_grid.floor().long().clamp(min=0, max=size_z - 1)
    v_hi = (v_lo + 1).clamp(max=size_z - 1)
    v_grid = torch.min(v_hi.float(), v_grid)
    return v_lo, v_hi, v_grid - v_lo.float(), valid


class _PointSampler:
    """Bilinear sampling of ``(R, C, S, S)`` estimates at the annotated points (each in its own proposal)."""

    def __init__(self, packed: PackedChartAnnotations, size: tuple[int, int]):
        h, w = size
        idx = packed.point_bbox_indices
        # per point, its box's parameters: the packed boxes are indexed by position among annotated boxes
        box_of_point = torch.searchsorted(packed.bbox_indices, idx)
        x0g, y0g, wg, hg = packed.bbox_xywh_gt[box_of_point].unbind(1)
        x0e, y0e, we, he = packed.bbox_xywh_est[box_of_point].unbind(1)
        self.x_lo, self.x_hi, x_w, x_valid = _linear_interpolation(packed.x_gt, x0g, wg, x0e, we, w)
        self.y_lo, self.y_hi, y_w, y_valid = _linear_interpolation(packed.y_gt, y0g, hg, y0e, he, h)
        self.index_bbox = idx
        self.j_valid = x_valid & y_valid
        self.w_ylo_xlo = (1 - x_w) * (1 - y_w)
        self.w_ylo_xhi = x_w * (1 - y_w)
        self.w_yhi_xlo = (1 - x_w) * y_w
        self.w_yhi_xhi = x_w * y_w

    def at_points(self, z: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        """``(P,)``: ``z[box, channel[p]]`` at every point."""
        b = self.index_bbox
        return (
            z[b, channel, self.y_lo, self.x_lo] * self.w_ylo_xlo
            + z[b, channel, self.y_lo, self.x_hi] * self.w_ylo_xhi
            + z[b, channel, self.y_hi, self.x_lo] * self.w_yhi_xlo
            + z[b, channel, self.y_hi, self.x_hi] * self.w_yhi_xhi
        )

    def all_channels_at_points(self, z: torch.Tensor) -> torch.Tensor:
        """``(P, C)``: every channel of ``z`` at every point."""
        b = self.index_bbox
        return (
            z[b, :, self.y_lo, self.x_lo] * self.w_ylo_xlo[:, None]
            + z[b, :, self.y_lo, self.x_hi] * self.w_ylo_xhi[:, None]
            + z[b, :, self.y_hi, self.x_lo] * self.w_yhi_xlo[:, None]
            + z[b, :, self.y_hi, self.x_hi] * self.w_yhi_xhi[:, None]
        )


def resample_data(
    z: torch.Tensor,
    bbox_xywh_src: torch.Tensor,
    bbox_xywh_dst: torch.Tensor,
    wout: int,
    hout: int,
    mode: str = "nearest",
) -> torch.Tensor:
    """Resample ``(N, C, H, W)`` maps spanning the source boxes onto ``hout x wout`` grids spanning the
    destination boxes (zeros outside the source box)."""
    n = bbox_xywh_src.size(0)
    x0s, y0s, ws, hs = bbox_xywh_src.unbind(1)
    x0d, y0d, wd, hd = bbox_xywh_dst.unbind(1)
    x0 = 2 * (x0d - x0s) / ws - 1
    y0 = 2 * (y0d - y0s) / hs - 1
    x1 = 2 * (x0d + wd - x0s) / ws - 1
    y1 = 2 * (y0d + hd - y0s) / hs - 1
    grid_w = torch.arange(wout, device=z.device, dtype=torch.float) / wout
    grid_h = torch.arange(hout, device=z.device, dtype=torch.float) / hout
    grid_x = grid_w[None, None, :] * (x1 - x0)[:, None, None] + x0[:, None, None]
    grid_y = grid_h[None, :, None] * (y1 - y0)[:, None, None] + y0[:, None, None]
    grid = torch.stack((grid_x.expand(n, hout, wout), grid_y.expand(n, hout, wout)), dim=3)
    return F.grid_sample(z, grid, mode=mode, padding_mode="zeros", align_corners=True)


def iid_isotropic_gaussian_uv_loss(u, v, sigma_u, target_u, target_v, sigma_lower_bound: float) -> torch.Tensor:
    """Summed NLL of ``(target_u, target_v)`` under N((u, v), sigma^2 I), ``sigma^2 = softplus(sigma_u) + bound``."""
    sigma2 = F.softplus(sigma_u) + sigma_lower_bound
    delta_sq = (u - target_u) ** 2 + (v - target_v) ** 2
    return (0.5 * (math.log(2 * math.pi) + 2 * torch.log(sigma2) + delta_sq / sigma2)).sum()


def indep_anisotropic_gaussian_uv_loss(
    u, v, sigma_u, kappa_u, kappa_v, target_u, target_v, sigma_lower_bound: float
) -> torch.Tensor:
    """Summed NLL under N((u, v), sigma^2 I + r r^T), ``r = (kappa_u, kappa_v)``."""
    sigma2 = F.softplus(sigma_u) + sigma_lower_bound
    r_sq = kappa_u**2 + kappa_v**2
    du, dv = u - target_u, v - target_v
    delta_sq = du**2 + dv**2
    delta_r_sq = (du * kappa_u + dv * kappa_v) ** 2
    denom2 = sigma2 * (sigma2 + r_sq)
    return (0.5 * (math.log(2 * math.pi) + torch.log(denom2) + delta_sq / sigma2 - delta_r_sq / denom2)).sum()


class DensePoseChartLoss:
    """Chart losses of a batch of proposals (see module doc)."""

    def __init__(
        self,
        *,
        heatmap_size: int = 112,
        w_points: float = 0.01,
        w_part: float = 1.0,
        w_segm: float = 5.0,
        num_coarse_segm_channels: int = 2,
    ):
        """
        Args:
            heatmap_size: side of the estimates (the coarse-segm target is resampled to it).
            w_points: weight of the U/V losses (sums over points).
            w_part: weight of the fine-part cross-entropy.
            w_segm: weight of the coarse-segmentation cross-entropy.
            num_coarse_segm_channels: 2 (person / background: parts > 0 are foreground) or 15 (coarse parts).
        """
        self.heatmap_size = heatmap_size
        self.w_points = w_points
        self.w_part = w_part
        self.w_segm = w_segm
        self.n_segm_chan = num_coarse_segm_channels

    def _uv_loss_names(self) -> tuple[str, ...]:
        return ("loss_densepose_U", "loss_densepose_V")

    def fake_losses(self, outputs: DensePoseChartPredictorOutput) -> dict[str, torch.Tensor]:
        """Zero losses connected to every output, so that all parameters get (zero) gradients."""
        zero = sum(t.sum() * 0 for t in vars(outputs).values() if t is not None)
        return {name: zero for name in (*self._uv_loss_names(), "loss_densepose_I", "loss_densepose_S")}

    def __call__(self, proposals: list[Instances], outputs: DensePoseChartPredictorOutput) -> dict[str, torch.Tensor]:
        """
        Args:
            proposals: per image, the proposals the predictor ran on (``proposal_boxes``, ``gt_boxes``,
                ``gt_densepose``), in the predictor's row order.
            outputs: the predictor's outputs for them.
        """
        packed = pack_chart_annotations(proposals)
        if packed is None:
            return self.fake_losses(outputs)
        sampler = _PointSampler(packed, outputs.u.shape[2:])
        j_valid_fg = sampler.j_valid & (packed.fine_segm_labels_gt > 0)
        if not torch.any(j_valid_fg):
            return self.fake_losses(outputs)
        losses = self.uv_losses(outputs, packed, sampler, j_valid_fg)
        losses.update(self.segm_losses(outputs, packed, sampler))
        return losses

    def uv_losses(self, outputs, packed, sampler, j_valid_fg) -> dict[str, torch.Tensor]:
        parts = packed.fine_segm_labels_gt
        u_est = sampler.at_points(outputs.u, parts)[j_valid_fg]
        v_est = sampler.at_points(outputs.v, parts)[j_valid_fg]
        return {
            "loss_densepose_U": F.smooth_l1_loss(u_est, packed.u_gt[j_valid_fg], reduction="sum") * self.w_points,
            "loss_densepose_V": F.smooth_l1_loss(v_est, packed.v_gt[j_valid_fg], reduction="sum") * self.w_points,
        }

    def segm_losses(self, outputs, packed, sampler) -> dict[str, torch.Tensor]:
        fine_gt = packed.fine_segm_labels_gt[sampler.j_valid]
        fine_est = sampler.all_channels_at_points(outputs.fine_segm)[sampler.j_valid]
        loss_i = F.cross_entropy(fine_est, fine_gt) * self.w_part
        coarse_est = outputs.coarse_segm[packed.bbox_indices]
        with torch.no_grad():
            coarse_gt = resample_data(
                packed.coarse_segm_gt.unsqueeze(1).float(),
                packed.bbox_xywh_gt,
                packed.bbox_xywh_est,
                self.heatmap_size,
                self.heatmap_size,
            ).squeeze(1)
            if self.n_segm_chan == 2:
                coarse_gt = coarse_gt > 0
        loss_s = F.cross_entropy(coarse_est, coarse_gt.long()) * self.w_segm
        return {"loss_densepose_I": loss_i, "loss_densepose_S": loss_s}


class DensePoseChartWithConfidenceLoss(DensePoseChartLoss):
    """:class:`DensePoseChartLoss` whose U/V terms are replaced, with UV confidences, by the Gaussian NLL
    ``loss_densepose_UV`` (weighted by ``w_points``). Segmentation confidences need no change of loss: they
    already scale the logits."""

    def __init__(self, *, uv_confidence: str | None = "iid_iso", uv_epsilon: float = 0.01, **kwargs):
        """
        Args:
            uv_confidence: one of :data:`UV_CONFIDENCE_TYPES` (the predictor's), or None (plain U/V losses).
            uv_epsilon: lower bound of sigma^2.
            kwargs: arguments of :class:`DensePoseChartLoss`.
        """
        super().__init__(**kwargs)
        if uv_confidence is not None and uv_confidence not in UV_CONFIDENCE_TYPES:
            raise ValueError(
                f"DensePoseChartWithConfidenceLoss: uv_confidence must be one of {UV_CONFIDENCE_TYPES} "
                f"or None, got {uv_confidence!r}."
            )
        self.uv_confidence = uv_confidence
        self.uv_epsilon = uv_epsilon

    def _uv_loss_names(self) -> tuple[str, ...]:
        return super()._uv_loss_names() if self.uv_confidence is None else ("loss_densepose_UV",)

    def uv_losses(self, outputs, packed, sampler, j_valid_fg) -> dict[str, torch.Tensor]:
        if self.uv_confidence is None:
            return super().uv_losses(outputs, packed, sampler, j_valid_fg)
        if outputs.sigma_2 is None:
            raise ValueError(
                "DensePoseChartWithConfidenceLoss: the predictor outputs no `sigma_2`; use a "
                "DensePoseChartWithConfidencePredictor with the same uv_confidence."
            )
        parts = packed.fine_segm_labels_gt

        def at(z):
            return sampler.at_points(z, parts)[j_valid_fg]

        u, v, sigma_2 = at(outputs.u), at(outputs.v), at(outputs.sigma_2)
        u_gt, v_gt = packed.u_gt[j_valid_fg], packed.v_gt[j_valid_fg]
        if self.uv_confidence == "iid_iso":
            loss = iid_isotropic_gaussian_uv_loss(u, v, sigma_2, u_gt, v_gt, self.uv_epsilon)
        else:
            loss = indep_anisotropic_gaussian_uv_loss(
                u, v, sigma_2, at(outputs.kappa_u), at(outputs.kappa_v), u_gt, v_gt, self.uv_epsilon
            )
        return {"loss_densepose_UV": loss * self.w_points}
