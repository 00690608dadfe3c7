"""Script a tiny model of each family with ``scripting_with_instances`` and compare it to the eager model;
used by ``test_scripting.py`` and the "TorchScript (script)" column of ``support_table.py``."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from libdet.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[2]

# The Instances fields of libdet's detectors at inference (proposals, detections, masks, keypoints).
INFERENCE_FIELDS = {
    "proposal_boxes": Boxes,
    "objectness_logits": Tensor,
    "pred_boxes": Boxes,
    "scores": Tensor,
    "pred_classes": Tensor,
    "pred_masks": Tensor,
    "pred_keypoints": Tensor,
    "pred_keypoint_heatmaps": Tensor,
}


def blocking_error(error: Exception) -> str:
    """``"<file>:<line>: <first line of the message>"``: where TorchScript stopped and why."""
    text = str(error).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    where = re.search(r'File "([^"]+)", line (\d+)', text)
    if where is None:
        return f"{type(error).__name__}: {first}"
    path = Path(where.group(1))
    if path.is_relative_to(REPO):
        path = path.relative_to(REPO)
    return f"{path}:{where.group(2)}: {first}"


def _as_tensor(value) -> Tensor:
    return value.tensor if isinstance(value, Boxes) else value


def compare_outputs(
    eager: list[dict], scripted: list[dict], box_tol: float, score_tol: float, min_iou: float
) -> list[str]:
    """Problems (empty if none) between the per-image outputs of the eager and the scripted model:
    ``instances`` fields (boxes/keypoints within ``box_tol`` px, scores within ``score_tol``, same classes,
    mask IoU >= ``min_iou``), ``sem_seg`` (within ``score_tol``) and ``panoptic_seg`` (the same segments,
    segment ids equal on at least ``min_iou`` of the pixels)."""
    from libdet.utils.testing import convert_scripted_instances

    problems = []
    for i, (expected, actual) in enumerate(zip(eager, scripted, strict=True)):
        if "sem_seg" in expected and not torch.allclose(expected["sem_seg"], actual["sem_seg"], atol=score_tol, rtol=0):
            problems.append(f"image {i}: sem_seg differs")
        if "panoptic_seg" in expected:
            problems += _compare_panoptic(i, expected["panoptic_seg"], actual["panoptic_seg"], min_iou)
        if "instances" not in expected:
            continue
        ref, out = expected["instances"], actual["instances"]
        if not isinstance(out, Instances):
            out = convert_scripted_instances(out)
        if len(ref) != len(out):
            problems.append(f"image {i}: {len(ref)} vs {len(out)} detections")
            continue
        for name, value in ref.get_fields().items():
            if not out.has(name):
                problems.append(f"image {i}: field {name} missing")
                continue
            a, b = _as_tensor(value), _as_tensor(out.get(name))
            if name == "pred_masks":
                inter = (a.bool() & b.bool()).flatten(1).sum(1).float()
                union = (a.bool() | b.bool()).flatten(1).sum(1).float()
                iou = torch.where(union > 0, inter / union.clamp(min=1), 1.0)  # two empty masks agree
                if len(a) and iou.min() < min_iou:
                    problems.append(f"image {i}: mask IoU {iou.min():.3f} < {min_iou}")
            elif name in ("pred_classes",):
                if not torch.equal(a, b):
                    problems.append(f"image {i}: classes differ")
            else:
                tol = box_tol if name in ("pred_boxes", "pred_keypoints") else score_tol
                if len(a) and (a.float() - b.float()).abs().max() > tol:
                    problems.append(f"image {i}: {name} differs by {(a.float() - b.float()).abs().max():.2e}")
    return problems


def _compare_panoptic(i: int, expected: tuple, actual: tuple, min_agreement: float) -> list[str]:
    (seg_a, info_a), (seg_b, info_b) = expected, actual
    segments = lambda info: [(s["id"], s["isthing"], s["category_id"]) for s in info]  # noqa: E731
    if seg_a.shape != seg_b.shape or segments(info_a) != segments(info_b):
        return [f"image {i}: panoptic segments differ: {segments(info_a)} vs {segments(info_b)}"]
    agreement = (seg_a == seg_b).float().mean().item()
    if agreement < min_agreement:
        return [f"image {i}: panoptic segment ids agree on {agreement:.3f} of the pixels < {min_agreement}"]
    return []


def script_and_compare(family: str, box_tol: float = 1e-3, score_tol: float = 1e-4, min_iou: float = 0.99):
    """Script the tiny model of ``family`` and compare it to eager on the two test images and the batch.

    Returns:
        ``(None, problems)`` when it scripts (``problems`` empty when the outputs agree), or
        ``(error, [])`` with :func:`blocking_error`'s text when scripting fails.
    """
    from libdet.export import scripting_with_instances
    from tests.export import _models

    model = _models.build(family)
    try:
        scripted = scripting_with_instances(model, INFERENCE_FIELDS)
    except Exception as e:  # TorchScript raises several error types
        return blocking_error(e), []
    _, batches = _models.images(family)
    problems = []
    for batch in batches:
        inputs = [{"image": image} for image in batch]
        with torch.no_grad():
            problems += compare_outputs(model(inputs), run_scripted(scripted, inputs), box_tol, score_tol, min_iou)
    return None, problems


def run_scripted(scripted: torch.jit.ScriptModule, inputs: list[dict]) -> list[dict]:
    """Outputs of a scripted model as the eager model's: as in detectron2, scripted detectors return the raw
    ``Instances`` at the network input resolution (R-CNN: ``inference(..., do_postprocess=False)``), which
    :func:`detector_postprocess` maps to each image's output size in Python. Panoptic FPN returns them with
    the ``(N, C, H, W)`` semantic scores of the padded batch: :func:`sem_seg_postprocess` and
    :func:`combine_semantic_and_instance_outputs` also run in Python. Semantic FPN returns the eager outputs."""
    from libdet.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from libdet.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
    from libdet.utils.testing import convert_scripted_instances

    raw = scripted.inference(inputs, do_postprocess=False) if hasattr(scripted, "roi_heads") else scripted(inputs)
    sem_seg = None
    if isinstance(raw, tuple):  # PanopticFPN: (Instances per image, semantic scores)
        raw, sem_seg = raw
    outputs = []
    for i, (result, x) in enumerate(zip(raw, inputs, strict=True)):
        if isinstance(result, dict):
            outputs.append(result)
            continue
        height, width = x["image"].shape[-2:]
        output = {"instances": detector_postprocess(convert_scripted_instances(result), height, width)}
        if sem_seg is not None:
            output["sem_seg"] = sem_seg_postprocess(sem_seg[i], (height, width), height, width)
            output["panoptic_seg"] = combine_semantic_and_instance_outputs(
                output["instances"],
                output["sem_seg"].argmax(dim=0),
                scripted.combine_overlap_thresh,
                scripted.combine_stuff_area_thresh,
                scripted.combine_instances_score_thresh,
            )
        outputs.append(output)
    return outputs
