"""Where a detector looks: the per-level feature maps of its backbone, the objectness of its proposal generator
(or, for a dense detector, its per-location class probability), and, for a chosen detection, the gradient
saliency and Grad-CAM of that detection's class score or mask.

Works for every :class:`GeneralizedRCNN` (Faster/Mask/Cascade/Keypoint R-CNN, and the instance branch of
:class:`PanopticFPN`) and every :class:`DenseDetector` (RetinaNet, FCOS), through forward hooks on
``model.backbone`` and on the RPN head / dense head; the model is not modified.

Example::

    model.eval()
    (exp,) = explain_detections(model, image_chw, detections=[0])   # the top-scoring detection
    exp.saliency      # (H, W) in [0, 1]
    exp.grad_cam      # (H, W) in [0, 1]
    exp.features      # {"p2": (H/4, W/4), ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from libdet.structures import Instances

from .meta_arch.dense_detector import DenseDetector
from .meta_arch.rcnn import GeneralizedRCNN

__all__ = ["Explanation", "explain_detections", "feature_maps_and_objectness"]

TARGETS = ("score", "mask")


@dataclass
class Explanation:
    """What the model's prediction for one detection depends on. Maps are float32 numpy arrays; image-sized
    ones are ``(H, W)`` at the size of the image given to the model, each scaled to ``[0, 1]`` by its maximum.

    Attributes:
        instances: all detections (``pred_boxes``, ``scores``, ``pred_classes``, ...) at the image size,
            sorted by score as the model returns them; detached.
        detection: index of the explained detection in ``instances``.
        target: ``"score"`` (its class score) or ``"mask"`` (the sum of its mask probabilities).
        features: per backbone level, ``(Hl, Wl)`` mean absolute activation over channels.
        objectness: per level, ``(Hl, Wl)`` probability: RPN objectness (max over anchors) for R-CNN models, the
            maximal class probability (over anchors and classes) for dense detectors.
        objectness_source: ``"rpn_objectness"`` or ``"class_probability"``.
        saliency: ``(H, W)`` gradient saliency: ``max over channels |d target / d pixel|``.
        grad_cam: ``(H, W)`` Grad-CAM summed over levels (each level upsampled to the image).
        grad_cam_per_level: per level, ``(H, W)`` Grad-CAM (``relu(sum_c mean(grad_c) * activation_c)``),
            not normalised, so levels compare.
    """

    instances: Instances
    detection: int
    target: str
    features: dict[str, np.ndarray]
    objectness: dict[str, np.ndarray]
    objectness_source: str
    saliency: np.ndarray
    grad_cam: np.ndarray
    grad_cam_per_level: dict[str, np.ndarray] = field(default_factory=dict)


class _Recorder:
    """Forward hooks that keep the backbone features and the per-level objectness / class logits."""

    def __init__(self, model: nn.Module):
        self.features: dict[str, torch.Tensor] = {}
        self.objectness_logits: dict[str, torch.Tensor] = {}
        self.padded_size: tuple[int, int] = (0, 0)  # (H, W) of the padded batch the backbone saw
        if isinstance(model, GeneralizedRCNN):
            rpn = model.proposal_generator
            head = getattr(rpn, "rpn_head", None) if rpn is not None else None
            self.source = "rpn_objectness"
            self._head_levels = list(getattr(rpn, "in_features", []))
        elif isinstance(model, DenseDetector):
            head = model.head
            self.source = "class_probability"
            self._head_levels = list(model.head_in_features)
        else:
            raise TypeError(
                f"explain: {type(model).__name__} is not supported; expected a GeneralizedRCNN or a DenseDetector "
                "(RetinaNet, FCOS) from libdet.modeling.meta_arch."
            )
        self._handles = [model.backbone.register_forward_hook(self._on_backbone)]
        if head is not None:
            self._handles.append(head.register_forward_hook(self._on_head))

    def _on_backbone(self, module, inputs, output) -> None:
        self.padded_size = tuple(inputs[0].shape[-2:])
        self.features = dict(output)

    def _on_head(self, module, inputs, output) -> None:
        # RPN head: (objectness logits (N, A, H, W), deltas); dense heads: (class logits (N, A*K, H, W), ...)
        self.objectness_logits = dict(zip(self._head_levels, output[0]))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _valid_region(x: torch.Tensor, image_size: tuple[int, int], padded_size: tuple[int, int]) -> torch.Tensor:
    """Crop a ``(..., h, w)`` map of the padded batch to the part that covers the image (not the padding)."""
    h = max(1, math.ceil(x.shape[-2] * image_size[0] / padded_size[0]))
    w = max(1, math.ceil(x.shape[-1] * image_size[1] / padded_size[1]))
    return x[..., :h, :w]


def _normalised(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float()
    top = x.max()
    return (x / top if top > 0 else x).cpu().numpy().astype(np.float32)


def _to_image(x: torch.Tensor, image_size: tuple[int, int], padded_size: tuple[int, int]) -> torch.Tensor:
    """Upsample a ``(h, w)`` map of the padded batch to the padded size and crop it to ``image_size``."""
    up = F.interpolate(x[None, None].float(), size=padded_size, mode="bilinear", align_corners=False)[0, 0]
    return up[: image_size[0], : image_size[1]]


def _run(model: nn.Module, image: torch.Tensor) -> Instances:
    """Detections of one image at its own size, with the autograd graph kept."""
    inputs = [{"image": image}]
    if isinstance(model, GeneralizedRCNN):
        # raw results: same coordinates (the model does not resize) and differentiable mask probabilities
        return GeneralizedRCNN.inference(model, inputs, do_postprocess=False)[0]
    return model(inputs)[0]["instances"]


def feature_maps_and_objectness(
    model: nn.Module, image: torch.Tensor
) -> tuple[Instances, dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Run ``model`` (eval mode) on one image without gradients.

    Args:
        model: a :class:`GeneralizedRCNN` or :class:`DenseDetector`.
        image: ``(C, H, W)`` image as the model takes it (its ``input_format``, 0-255).

    Returns:
        ``(instances, features, objectness, objectness_source)`` as in :class:`Explanation`.
    """
    with torch.no_grad():
        instances, recorder = _forward_recorded(model, image)
    features, objectness = _level_maps(model, recorder, image)
    return instances.to("cpu"), features, objectness, recorder.source


def _forward_recorded(model: nn.Module, image: torch.Tensor) -> tuple[Instances, _Recorder]:
    if model.training:
        raise RuntimeError("explain: put the model in eval mode first (model.eval()).")
    if image.dim() != 3:
        raise ValueError(f"explain: expected one (C, H, W) image, got shape {tuple(image.shape)}.")
    recorder = _Recorder(model)
    try:
        instances = _run(model, image)
    finally:
        recorder.remove()
    return instances, recorder


def _level_maps(
    model: nn.Module, recorder: _Recorder, image: torch.Tensor
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    size = tuple(image.shape[-2:])
    padded = recorder.padded_size
    features = {
        name: _valid_region(x[0].detach().abs().mean(0), size, padded).float().cpu().numpy()
        for name, x in recorder.features.items()
    }
    objectness = {}
    for name, logits in recorder.objectness_logits.items():
        probs = logits[0].detach().float().sigmoid()  # (A, H, W) or (A*K, H, W): max over anchors and classes
        objectness[name] = _valid_region(probs.amax(0), size, padded).cpu().numpy()
    return features, objectness


def explain_detections(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    *,
    detections: Sequence[int] = (0,),
    target: str = "score",
) -> list[Explanation]:
    """Explain chosen detections of ``model`` on one image (one forward pass, one backward per detection).

    Args:
        model: a :class:`GeneralizedRCNN` or :class:`DenseDetector` in eval mode.
        image: ``(C, H, W)`` tensor or ``(H, W, C)`` numpy array, in the model's ``input_format``, 0-255.
        detections: indices into the detections sorted by score (0: the top one).
        target: ``"score"``: the detection's class score; ``"mask"``: the sum of its mask probabilities
            (models with a mask head).

    Returns:
        One :class:`Explanation` per index in ``detections``.

    Raises:
        ValueError: an unknown ``target``, ``"mask"`` for a model without masks, or an index beyond the
            number of detections (the message gives it).
    """
    if target not in TARGETS:
        raise ValueError(f"explain: target must be one of {TARGETS}, got {target!r}.")
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"explain: expected an (H, W, C) image array, got shape {image.shape}.")
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    device = next(model.parameters()).device
    pixels = image.detach().to(device=device, dtype=torch.float32).requires_grad_(True)
    with torch.enable_grad():
        instances, recorder = _forward_recorded(model, pixels)
    features, objectness = _level_maps(model, recorder, pixels)
    num = len(instances)
    if target == "mask" and not instances.has("pred_masks"):
        raise ValueError(f"explain: target='mask' but {type(model).__name__} predicts no masks.")
    size = tuple(pixels.shape[-2:])
    padded = recorder.padded_size
    names = list(recorder.features)
    activations = [recorder.features[n] for n in names]
    results = []
    for i in detections:
        if not 0 <= int(i) < num:
            raise ValueError(f"explain: detection {i} requested, but the model made {num} detections.")
        value = instances.scores[i] if target == "score" else instances.pred_masks[i].sum()
        grads = torch.autograd.grad(value, [pixels, *activations], retain_graph=True, allow_unused=True)
        saliency = grads[0].abs().amax(0) if grads[0] is not None else torch.zeros(size)
        cams = {}
        for name, act, grad in zip(names, activations, grads[1:]):
            if grad is None:
                cam = torch.zeros(size, device=act.device)
            else:
                weights = grad[0].mean(dim=(1, 2))  # (C,): how much each channel raises the target
                cam = _to_image(F.relu((weights[:, None, None] * act[0]).sum(0)), size, padded)
            cams[name] = cam.detach()
        total = torch.stack(list(cams.values())).sum(0)
        results.append(
            Explanation(
                instances=_detached(instances),
                detection=int(i),
                target=target,
                features=features,
                objectness=objectness,
                objectness_source=recorder.source,
                saliency=_normalised(saliency),
                grad_cam=_normalised(total),
                grad_cam_per_level={k: v.float().cpu().numpy() for k, v in cams.items()},
            )
        )
    return results


def _detached(instances: Instances) -> Instances:
    out = Instances(instances.image_size)
    for k, v in instances.get_fields().items():
        if isinstance(v, torch.Tensor):
            v = v.detach()
        elif isinstance(getattr(v, "tensor", None), torch.Tensor):  # Boxes, RotatedBoxes
            v = type(v)(v.tensor.detach())
        out.set(k, v.to("cpu"))
    return out
