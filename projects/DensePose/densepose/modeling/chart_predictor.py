"""DensePose chart predictors: head features -> coarse / fine segmentation, U, V (and confidences) over the box."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..structures import DensePoseChartPredictorOutput
from .init import initialize_module_params

__all__ = ["DensePoseChartPredictor", "DensePoseChartWithConfidencePredictor", "UV_CONFIDENCE_TYPES"]

#: "iid_iso": one sigma per pixel and part for U and V together; "indep_aniso": sigma plus a (kappa_u, kappa_v)
#: direction of extra variance (Neverova et al., "Correlated Uncertainty for Learning Dense Correspondences", 2019).
UV_CONFIDENCE_TYPES = ("iid_iso", "indep_aniso")


class DensePoseChartPredictor(nn.Module):
    """Four stride-2 transposed convs (``ann_index_lowres``: coarse segmentation, ``index_uv_lowres``: fine
    segmentation, ``u_lowres``, ``v_lowres``: one channel per part plus background), each followed by a bilinear
    ``up_scale`` upsampling: ``(R, C, S, S) -> (R, *, 4 S, 4 S)`` with the default stride 2 and ``up_scale`` 2
    (28 -> 56 -> 112)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_coarse_segm_channels: int = 2,
        num_patches: int = 24,
        deconv_kernel: int = 4,
        up_scale: int = 2,
    ):
        """
        Args:
            in_channels: channels of the head features (the head's ``n_out_channels``).
            num_coarse_segm_channels: 2 (background / person) or 15 (background + 14 coarse parts).
            num_patches: fine parts (charts); the fine outputs have ``num_patches + 1`` channels.
            deconv_kernel: kernel of the transposed convs (even; padding ``kernel / 2 - 1`` doubles the size).
            up_scale: bilinear upsampling factor after them.
        """
        super().__init__()
        n_fine = num_patches + 1
        self.ann_index_lowres = self._deconv(in_channels, num_coarse_segm_channels, deconv_kernel)
        self.index_uv_lowres = self._deconv(in_channels, n_fine, deconv_kernel)
        self.u_lowres = self._deconv(in_channels, n_fine, deconv_kernel)
        self.v_lowres = self._deconv(in_channels, n_fine, deconv_kernel)
        self.scale_factor = up_scale
        initialize_module_params(self)

    @staticmethod
    def _deconv(in_channels: int, out_channels: int, kernel: int) -> nn.ConvTranspose2d:
        return nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2 - 1)

    def interp2d(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)

    def forward(self, head_outputs: torch.Tensor) -> DensePoseChartPredictorOutput:
        """``head_outputs``: ``(R, C, S, S)``; returns the upsampled estimates (see
        :class:`DensePoseChartPredictorOutput`)."""
        return DensePoseChartPredictorOutput(
            coarse_segm=self.interp2d(self.ann_index_lowres(head_outputs)),
            fine_segm=self.interp2d(self.index_uv_lowres(head_outputs)),
            u=self.interp2d(self.u_lowres(head_outputs)),
            v=self.interp2d(self.v_lowres(head_outputs)),
        )


class DensePoseChartWithConfidencePredictor(DensePoseChartPredictor):
    """The chart predictor plus confidence estimates ("WC1": ``uv_confidence="iid_iso"``, "WC2": ``"indep_aniso"``,
    "M" suffix: ``segm_confidence=True``):

    - ``sigma_2_lowres`` (and ``kappa_u_lowres``, ``kappa_v_lowres`` for indep_aniso): raw UV confidence
      parameters, made positive by the loss (softplus + ``uv_epsilon``).
    - ``fine_segm_confidence_lowres``, ``coarse_segm_confidence_lowres``: one-channel segmentation confidences,
      ``softplus + segm_epsilon``, that multiply (act as a temperature of) the segmentation logits.
    """

    def __init__(
        self,
        *,
        uv_confidence: str | None = "iid_iso",
        segm_confidence: bool = False,
        segm_epsilon: float = 0.01,
        **kwargs,
    ):
        """
        Args:
            uv_confidence: one of :data:`UV_CONFIDENCE_TYPES`, or None for no UV confidence.
            segm_confidence: estimate segmentation confidences.
            segm_epsilon: lower bound of the segmentation confidences.
            kwargs: arguments of :class:`DensePoseChartPredictor`.
        """
        super().__init__(**kwargs)
        if uv_confidence is not None and uv_confidence not in UV_CONFIDENCE_TYPES:
            raise ValueError(
                f"DensePoseChartWithConfidencePredictor: uv_confidence must be one of "
                f"{UV_CONFIDENCE_TYPES} or None, got {uv_confidence!r}."
            )
        in_channels = kwargs["in_channels"]
        kernel = kwargs.get("deconv_kernel", 4)
        n_fine = kwargs.get("num_patches", 24) + 1
        self.uv_confidence = uv_confidence
        self.segm_confidence = segm_confidence
        self.segm_epsilon = segm_epsilon
        if uv_confidence is not None:
            self.sigma_2_lowres = self._deconv(in_channels, n_fine, kernel)
        if uv_confidence == "indep_aniso":
            self.kappa_u_lowres = self._deconv(in_channels, n_fine, kernel)
            self.kappa_v_lowres = self._deconv(in_channels, n_fine, kernel)
        if segm_confidence:
            self.fine_segm_confidence_lowres = self._deconv(in_channels, 1, kernel)
            self.coarse_segm_confidence_lowres = self._deconv(in_channels, 1, kernel)
        initialize_module_params(self)

    def forward(self, head_outputs: torch.Tensor) -> DensePoseChartPredictorOutput:
        out = super().forward(head_outputs)
        if self.uv_confidence is not None:
            out.sigma_2 = self.interp2d(self.sigma_2_lowres(head_outputs))
        if self.uv_confidence == "indep_aniso":
            out.kappa_u = self.interp2d(self.kappa_u_lowres(head_outputs))
            out.kappa_v = self.interp2d(self.kappa_v_lowres(head_outputs))
        if self.segm_confidence:
            fine_conf = F.softplus(self.interp2d(self.fine_segm_confidence_lowres(head_outputs))) + self.segm_epsilon
            coarse_conf = (
                F.softplus(self.interp2d(self.coarse_segm_confidence_lowres(head_outputs))) + self.segm_epsilon
            )
            out.fine_segm_confidence, out.coarse_segm_confidence = fine_conf, coarse_conf
            out.fine_segm = out.fine_segm * fine_conf  # (R, 1, S, S) broadcasts over the part channels
            out.coarse_segm = out.coarse_segm * coarse_conf
        return out
