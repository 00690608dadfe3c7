"""The raw outputs of a DensePose chart predictor for N boxes (``pred_densepose`` on inference Instances)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["DensePoseChartPredictorOutput"]


@dataclass
class DensePoseChartPredictorOutput:
    """Per-box DensePose estimates over an ``S x S`` grid spanning the box (S = 112 for the model zoo).

    Attributes:
        coarse_segm: ``(N, K, S, S)`` logits of the coarse segmentation (K = 2: background / person, or 15).
        fine_segm: ``(N, 25, S, S)`` logits of the fine part (0 background, 1..24 charts).
        u, v: ``(N, 25, S, S)`` chart coordinates, one channel per part.
        sigma_1, sigma_2, kappa_u, kappa_v: ``(N, 25, S, S)`` UV confidence parameters (confidence models only).
        fine_segm_confidence, coarse_segm_confidence: ``(N, 1, S, S)`` segmentation confidences (softplus + eps).
    """

    coarse_segm: torch.Tensor
    fine_segm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    sigma_1: torch.Tensor | None = None
    sigma_2: torch.Tensor | None = None
    kappa_u: torch.Tensor | None = None
    kappa_v: torch.Tensor | None = None
    fine_segm_confidence: torch.Tensor | None = None
    coarse_segm_confidence: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.coarse_segm.size(0)

    def _map(self, fn) -> DensePoseChartPredictorOutput:
        return DensePoseChartPredictorOutput(
            **{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name)) for f in fields(self)}
        )

    def __getitem__(self, item: int | slice | torch.Tensor) -> DensePoseChartPredictorOutput:
        """Select boxes (an int keeps the box dimension)."""
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
        return self._map(lambda t: t[item])

    def to(self, *args, **kwargs) -> DensePoseChartPredictorOutput:
        return self._map(lambda t: t.to(*args, **kwargs))

    @staticmethod
    def cat(outputs: list[DensePoseChartPredictorOutput]) -> DensePoseChartPredictorOutput:
        first = outputs[0]
        return DensePoseChartPredictorOutput(
            **{
                f.name: None if getattr(first, f.name) is None else torch.cat([getattr(o, f.name) for o in outputs])
                for f in fields(first)
            }
        )
