"""Compare an exported model with the eager model it came from, image by image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .api import ExportedModel, batch_images

__all__ = ["ExportDiff", "compare_to_eager"]


@dataclass
class ExportDiff:
    """Largest differences between exported and eager outputs over the compared images.

    Attributes:
        num_detections: per image, ``(eager, exported)`` numbers of detections.
        box: max absolute box coordinate difference (pixels); 0 without detections.
        score: max absolute score difference.
        classes_equal: every detection has the eager class.
        mask_iou: min IoU of a pasted mask with its eager mask (1 for two empty masks).
        keypoint: max absolute keypoint (x, y, score) difference.
        sem_seg: max absolute semantic score difference.
        panoptic_agreement: min fraction of pixels with the eager panoptic segment id.
    """

    num_detections: list[tuple[int, int]] = field(default_factory=list)
    box: float = 0.0
    score: float = 0.0
    classes_equal: bool = True
    mask_iou: float = 1.0
    keypoint: float = 0.0
    sem_seg: float = 0.0
    panoptic_agreement: float = 1.0

    @property
    def same_detections(self) -> bool:
        """Every image has as many detections as in eager mode."""
        return all(a == b for a, b in self.num_detections)

    def check(self, box_tol: float, score_tol: float = 1e-4, min_mask_iou: float = 0.99) -> list[str]:
        """The failed criteria, as readable strings (empty when the export matches)."""
        problems = []
        if not self.same_detections:
            problems.append(f"numbers of detections differ (eager, exported): {self.num_detections}")
        if self.box > box_tol:
            problems.append(f"box difference {self.box:.3g} px > {box_tol}")
        if self.score > score_tol:
            problems.append(f"score difference {self.score:.3g} > {score_tol}")
        if not self.classes_equal:
            problems.append("classes differ")
        if self.mask_iou < min_mask_iou:
            problems.append(f"mask IoU {self.mask_iou:.4f} < {min_mask_iou}")
        if self.keypoint > box_tol:
            problems.append(f"keypoint difference {self.keypoint:.3g} > {box_tol}")
        if self.sem_seg > max(score_tol, box_tol):
            problems.append(f"semantic score difference {self.sem_seg:.3g}")
        if self.panoptic_agreement < min_mask_iou:
            problems.append(f"panoptic agreement {self.panoptic_agreement:.4f} < {min_mask_iou}")
        return problems

    def summary(self) -> str:
        """One line: the differences that apply."""
        return (
            f"detections {self.num_detections}, max |box| {self.box:.2e} px, max |score| {self.score:.2e}, "
            f"classes equal {self.classes_equal}, min mask IoU {self.mask_iou:.4f}, max |keypoint| "
            f"{self.keypoint:.2e}, max |sem_seg| {self.sem_seg:.2e}, panoptic agreement {self.panoptic_agreement:.4f}"
        )


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 1.0
    a, b = a.flatten(1).bool(), b.flatten(1).bool()
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return float(iou.min())


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def compare_to_eager(
    model: nn.Module, exported: ExportedModel, batches: Sequence[torch.Tensor | Sequence[torch.Tensor]]
) -> ExportDiff:
    """Run ``exported`` on each batch and ``model`` (eval mode) on each of its images; collect the largest
    differences of matched detections (same order: by decreasing score).

    Args:
        model: the eager model.
        exported: the exported model.
        batches: ``(N, C, H, W)`` batches or lists of same-size ``(C, H, W)`` images.
    """
    diff = ExportDiff()
    for batch in batches:
        images = batch_images(batch)
        with torch.no_grad():
            eager = model([{"image": img} for img in images])
        results = exported.predict(images)
        for ref, out in zip(eager, results):
            if "instances" in ref:
                _compare_instances(diff, ref["instances"].to("cpu"), out["instances"].to("cpu"))
            if "sem_seg" in ref:
                diff.sem_seg = max(diff.sem_seg, _max_abs(ref["sem_seg"].cpu(), out["sem_seg"].cpu()))
            if "panoptic_seg" in ref and "panoptic_seg" in out:
                agree = (ref["panoptic_seg"][0].cpu() == out["panoptic_seg"][0].cpu()).float().mean()
                diff.panoptic_agreement = min(diff.panoptic_agreement, float(agree))
    return diff


def _compare_instances(diff: ExportDiff, ref, out) -> None:
    diff.num_detections.append((len(ref), len(out)))
    if len(ref) != len(out):
        return
    diff.box = max(diff.box, _max_abs(ref.pred_boxes.tensor, out.pred_boxes.tensor))
    diff.score = max(diff.score, _max_abs(ref.scores, out.scores))
    diff.classes_equal &= bool(torch.equal(ref.pred_classes, out.pred_classes))
    if ref.has("pred_masks"):
        diff.mask_iou = min(diff.mask_iou, _mask_iou(ref.pred_masks, out.pred_masks))
    if ref.has("pred_keypoints"):
        diff.keypoint = max(diff.keypoint, _max_abs(ref.pred_keypoints, out.pred_keypoints))
