"""DensePose R-CNN ROI heads: libdet's standard box branch plus a DensePose branch (decoder, pooler, head, chart
predictor) that trains on foreground proposals overlapping a DensePose-annotated person by more than 0.7 IoU."""

from __future__ import annotations

import torch
from torch import nn

from libdet.modeling.poolers import ROIPooler
from libdet.modeling.roi_heads import StandardROIHeads, select_foreground_proposals
from libdet.structures import Instances
from libdet.structures.boxes import matched_pairwise_iou

from ..structures import DensePoseChartPredictorOutput
from .chart_loss import DensePoseChartLoss
from .decoder import Decoder

__all__ = ["DensePoseROIHeads", "filter_densepose_proposals", "densepose_inference"]


def filter_densepose_proposals(proposals: list[Instances], iou_threshold: float) -> list[Instances]:
    """Per image, the proposals whose IoU with their matched gt box exceeds ``iou_threshold`` and whose gt has a
    DensePose annotation (``gt_densepose`` item not None); images without ``gt_densepose`` give no proposals."""
    kept = []
    for props in proposals:
        if not props.has("gt_densepose") or len(props) == 0:
            continue
        iou = matched_pairwise_iou(props.gt_boxes, props.proposal_boxes)
        props = props[iou > iou_threshold]
        annotated = [k for k, dp in enumerate(props.gt_densepose) if dp is not None]
        if len(annotated) != len(props):
            props = props[torch.tensor(annotated, dtype=torch.long)]
        kept.append(props)
    return kept


def densepose_inference(outputs: DensePoseChartPredictorOutput, instances: list[Instances]) -> None:
    """Split the predictor outputs of all detections (in order) into ``pred_densepose`` of each image's
    :class:`Instances` (in place)."""
    start = 0
    for inst in instances:
        n = len(inst)
        inst.pred_densepose = outputs[start : start + n]
        start += n


class DensePoseROIHeads(StandardROIHeads):
    """:class:`StandardROIHeads` with a DensePose branch. State-dict names follow detectron2: ``decoder``,
    ``densepose_head``, ``densepose_predictor``."""

    def __init__(
        self,
        *,
        densepose_in_features: list[str],
        densepose_pooler: ROIPooler,
        densepose_head: nn.Module,
        densepose_predictor: nn.Module,
        densepose_loss: DensePoseChartLoss,
        decoder: Decoder | None = None,
        densepose_fg_iou_threshold: float = 0.7,
        **kwargs,
    ):
        """
        Args:
            densepose_in_features: feature names of the branch (``p2..p5``); with a decoder they are fused into
                one stride-4 map first (then the pooler has one scale).
            densepose_pooler: pools ``(R, C, 28, 28)`` ROI features.
            densepose_head: e.g. :class:`DensePoseV1ConvXHead` or :class:`DensePoseDeepLabHead`.
            densepose_predictor: e.g. :class:`DensePoseChartPredictor`; returns a
                :class:`DensePoseChartPredictorOutput`.
            densepose_loss: e.g. :class:`DensePoseChartLoss` (called with proposals and predictor outputs).
            decoder: the Panoptic-FPN-style :class:`Decoder`, or None to pool from the FPN levels.
            densepose_fg_iou_threshold: a proposal trains the branch when its IoU with its gt exceeds this.
            kwargs: arguments of :class:`StandardROIHeads`.
        """
        super().__init__(**kwargs)
        self.densepose_in_features = list(densepose_in_features)
        self.decoder = decoder
        self.densepose_pooler = densepose_pooler
        self.densepose_head = densepose_head
        self.densepose_predictor = densepose_predictor
        self.densepose_loss = densepose_loss
        self.densepose_fg_iou_threshold = densepose_fg_iou_threshold

    def _densepose_outputs(self, features: dict[str, torch.Tensor], boxes) -> DensePoseChartPredictorOutput:
        feats = [features[f] for f in self.densepose_in_features]
        if self.decoder is not None:
            feats = [self.decoder(feats)]
        return self.densepose_predictor(self.densepose_head(self.densepose_pooler(feats, boxes)))

    def _densepose_zero_losses(self) -> dict[str, torch.Tensor]:
        """Zero losses on the branch's parameters, for a batch without a usable DensePose proposal."""
        params = [self.densepose_head, self.densepose_predictor] + ([self.decoder] if self.decoder else [])
        zero = sum(p.sum() * 0 for m in params for p in m.parameters())
        names = self.densepose_loss._uv_loss_names() + ("loss_densepose_I", "loss_densepose_S")
        return {name: zero for name in names}

    def _densepose_losses(
        self, features: dict[str, torch.Tensor], proposals: list[Instances]
    ) -> dict[str, torch.Tensor]:
        fg, _ = select_foreground_proposals(proposals, self.num_classes)
        fg = filter_densepose_proposals(fg, self.densepose_fg_iou_threshold)
        if sum(len(p) for p in fg) == 0:
            return self._densepose_zero_losses()
        # the pooler's rows are the images' proposals concatenated in order; the loss indexes them the same way
        outputs = self._densepose_outputs(features, [p.proposal_boxes for p in fg])
        return self.densepose_loss(fg, outputs)

    def _densepose_inference(self, features: dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        # with no detection the branch runs on an empty batch, so that every Instances gets a `pred_densepose`
        densepose_inference(self._densepose_outputs(features, [x.pred_boxes for x in instances]), instances)
        return instances

    def _branch_losses(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> dict[str, torch.Tensor]:
        losses = super()._branch_losses(features, proposals)
        losses.update(self._densepose_losses(features, proposals))
        return losses

    def _branch_inference(self, features: dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        return self._densepose_inference(features, super()._branch_inference(features, instances))
