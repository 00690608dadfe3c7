"""Active-learning mining scores: which unlabelled images would teach the detector the most.

* ``cald`` — consistency-based active learning for detection (Yu et al., 2022). Each image is also predicted
  under four augmentations (horizontal flip, cut-out, a small rotation, a shrink into a same-size canvas); each
  confident detection of the original image is mapped into the augmented frame and matched to the augmented
  detection it overlaps most. The pair's consistency is the mean of their IoU and ``1 - JS``, where ``JS`` is the
  Jensen-Shannon divergence (normalised to [0, 1]) between the two detections' distributions over the classes
  plus background (a detection of class ``c`` with score ``s`` puts ``s`` on ``c`` and ``1 - s`` on background).
  An augmentation's consistency is the score-weighted mean over the detections; the image's score is
  ``1 -`` the lowest consistency over the augmentations. With no confident detection on the original, the score
  is the highest score any augmentation detects (an object that appears only once augmented is inconsistent).
* ``entropy`` — the mean entropy of the detections' (score, 1 - score) distributions.
* ``random`` — uniform random scores (the baseline every strategy must beat).

Scores are higher for more informative images. The predictor is called on batches of images (every view of
several images at once), so the model runs batched and uses the process's intra-op threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from libdet.structures import Boxes, Instances, pairwise_iou

__all__ = ["MINING_ALGORITHMS", "cald_scores", "entropy_scores", "js_divergence", "mine", "random_scores"]

# predictor(list of (H, W, 3) uint8 BGR images) -> one Instances per image (pred_boxes, scores, pred_classes),
# in the image's own frame.
Predictor = Callable[[Sequence[np.ndarray]], list[Instances]]


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence, in nats, between distributions along the last dimension (0 ... ln 2)."""
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        # 0 * log(0 / m) is 0: mask the zero entries instead of adding an epsilon that biases the value.
        ratio = torch.where(a > 0, a / m.clamp_min(1e-12), torch.ones_like(a))
        return (a * ratio.log()).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0)


def _class_distribution(classes: torch.Tensor, scores: torch.Tensor, num_bins: int) -> torch.Tensor:
    """(N,) classes and scores -> (N, num_bins + 1): ``s`` on the class, ``1 - s`` on the last (background) bin."""
    dist = torch.zeros(len(classes), num_bins + 1, dtype=torch.float64)
    rows = torch.arange(len(classes))
    dist[rows, classes.long()] = scores.double()
    dist[:, -1] = 1 - scores.double()
    return dist


class _View:
    """An augmented view of an image and the map of boxes from the original frame into it."""

    def __init__(self, image: np.ndarray, map_boxes: Callable[[np.ndarray], np.ndarray]) -> None:
        self.image = image
        self.map_boxes = map_boxes


def _flip(image: np.ndarray, rng: np.random.Generator) -> _View:
    width = image.shape[1]

    def map_boxes(b: np.ndarray) -> np.ndarray:
        return np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1)

    return _View(np.ascontiguousarray(image[:, ::-1]), map_boxes)


def _cutout(image: np.ndarray, rng: np.random.Generator) -> _View:
    out = image.copy()
    height, width = image.shape[:2]
    for _ in range(3):
        h, w = max(1, int(height * rng.uniform(0.05, 0.15))), max(1, int(width * rng.uniform(0.05, 0.15)))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        out[y : y + h, x : x + w] = 127
    return _View(out, lambda b: b.copy())


def _rotate(image: np.ndarray, rng: np.random.Generator, max_degrees: float = 5.0) -> _View:
    degrees = float(rng.uniform(-max_degrees, max_degrees))
    height, width = image.shape[:2]
    rotated = np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.BILINEAR, fillcolor=(127, 127, 127)))
    cx, cy = width / 2.0, height / 2.0
    # PIL rotates counter-clockwise on screen (y down): x' = cx + c(x-cx) + s(y-cy), y' = cy - s(x-cx) + c(y-cy).
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

    def map_boxes(b: np.ndarray) -> np.ndarray:
        xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], axis=1) - cx
        ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], axis=1) - cy
        rx, ry = cx + c * xs + s * ys, cy - s * xs + c * ys
        out = np.stack([rx.min(1), ry.min(1), rx.max(1), ry.max(1)], axis=1)
        return np.clip(out, 0, [width, height, width, height])

    return _View(np.ascontiguousarray(rotated), map_boxes)


def _shrink(image: np.ndarray, rng: np.random.Generator) -> _View:
    height, width = image.shape[:2]
    scale = float(rng.uniform(0.7, 0.9))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    small = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    canvas = np.full_like(image, 127)
    y, x = (height - h) // 2, (width - w) // 2
    canvas[y : y + h, x : x + w] = small
    sx, sy = w / width, h / height

    def map_boxes(b: np.ndarray) -> np.ndarray:
        return b * np.array([sx, sy, sx, sy]) + np.array([x, y, x, y])

    return _View(canvas, map_boxes)


_AUGMENTATIONS = (_flip, _cutout, _rotate, _shrink)


def _cald_one(ref: Instances, views: list[_View], outputs: list[Instances], score_threshold: float) -> float:
    keep = ref.scores >= score_threshold
    ref_boxes, ref_scores, ref_classes = ref.pred_boxes.tensor[keep], ref.scores[keep], ref.pred_classes[keep]
    if len(ref_boxes) == 0:
        return max((float(o.scores.max()) for o in outputs if len(o) > 0), default=0.0)
    num_bins = int(max([int(ref_classes.max())] + [int(o.pred_classes.max()) for o in outputs if len(o) > 0])) + 1
    ref_dist = _class_distribution(ref_classes, ref_scores, num_bins)
    weights = ref_scores.double() / ref_scores.double().sum()
    lowest = 1.0
    for view, out in zip(views, outputs):
        if len(out) == 0:
            return 1.0  # every confident detection vanished under this augmentation
        mapped = torch.as_tensor(view.map_boxes(ref_boxes.double().numpy()), dtype=torch.float32)
        iou = pairwise_iou(Boxes(mapped), out.pred_boxes.to("cpu"))  # (R, D)
        best_iou, match = iou.max(dim=1)
        aug_dist = _class_distribution(out.pred_classes[match], out.scores[match], num_bins)
        agreement = 1 - js_divergence(ref_dist, aug_dist) / math.log(2)
        consistency = torch.where(best_iou > 0, 0.5 * (best_iou.double() + agreement), torch.zeros_like(agreement))
        lowest = min(lowest, float((weights * consistency).sum()))
    return 1.0 - lowest


def cald_scores(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    *,
    score_threshold: float = 0.3,
    seed: int = 0,
    images_per_batch: int = 2,
) -> list[float]:
    """CALD inconsistency of each ``(H, W, 3)`` uint8 image (see the module docstring); in [0, 1]."""
    scores: list[float] = []
    for start in range(0, len(images), images_per_batch):
        chunk = images[start : start + images_per_batch]
        batch, per_image_views = [], []
        for offset, image in enumerate(chunk):
            rng = np.random.default_rng([seed, start + offset])
            views = [augment(image, rng) for augment in _AUGMENTATIONS]
            per_image_views.append(views)
            batch.extend([image] + [v.image for v in views])
        outputs = [o.to("cpu") for o in predictor(batch)]
        stride = 1 + len(_AUGMENTATIONS)
        for i, views in enumerate(per_image_views):
            block = outputs[i * stride : (i + 1) * stride]
            scores.append(_cald_one(block[0], views, block[1:], score_threshold))
    return scores


def entropy_scores(predictor: Predictor, images: Sequence[np.ndarray], *, images_per_batch: int = 8) -> list[float]:
    """Mean binary entropy (nats) of each image's detection scores; 0 for an image without detections."""
    scores: list[float] = []
    for start in range(0, len(images), images_per_batch):
        for out in predictor(images[start : start + images_per_batch]):
            p = out.scores.double().clamp(1e-12, 1 - 1e-12)
            scores.append(float((-(p * p.log()) - (1 - p) * (1 - p).log()).mean()) if len(p) else 0.0)
    return scores


def random_scores(num_images: int, *, seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).random(num_images).tolist()


MINING_ALGORITHMS = ("cald", "entropy", "random")


def mine(
    algorithm: str,
    predictor: Predictor,
    images: Sequence[np.ndarray],
    *,
    score_threshold: float = 0.3,
    seed: int = 0,
) -> list[float]:
    """Scores of ``images`` by ``algorithm`` (one of :data:`MINING_ALGORITHMS`)."""
    if algorithm == "cald":
        return cald_scores(predictor, images, score_threshold=score_threshold, seed=seed)
    if algorithm == "entropy":
        return entropy_scores(predictor, images)
    if algorithm == "random":
        return random_scores(len(images), seed=seed)
    raise ValueError(f"mining_algorithm must be one of {MINING_ALGORITHMS}, got {algorithm!r}.")
