"""Concrete augmentations (flip, resize, crop, rotation, colour jitter, ...).

Each samples its parameters from NumPy's global RNG (``np.random``) and returns a deterministic transform
from :mod:`~libdet.data.transforms.transform`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from libdet.structures import Boxes, pairwise_iou

from .augmentation import Augmentation, _transform_to_aug
from .transform import (
    BlendTransform,
    CropTransform,
    ExtentTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    RotationTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "FixedSizeCrop",
    "MinIoURandomCrop",
    "RandomApply",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomExtent",
    "RandomFlip",
    "RandomLighting",
    "RandomResize",
    "RandomRotation",
    "RandomSaturation",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
]


class RandomApply(Augmentation):
    """Apply the wrapped augmentation (or transform) with probability ``prob``.

    Args:
        tfm_or_aug: the augmentation or transform to apply.
        prob: probability in ``[0, 1]``.
    """

    def __init__(self, tfm_or_aug: Augmentation | Transform, prob: float = 0.5):
        super().__init__()
        self.aug = _transform_to_aug(tfm_or_aug)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply: `prob` must be in [0, 1], got {prob}.")
        self.prob = prob

    def get_transform(self, *args: Any) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input: Any) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()


class RandomFlip(Augmentation):
    """Flip the image horizontally or vertically with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        super().__init__()
        if horizontal and vertical:
            raise ValueError("RandomFlip: cannot flip both horizontally and vertically; use two RandomFlip.")
        if not horizontal and not vertical:
            raise ValueError("RandomFlip: one of `horizontal` or `vertical` must be True.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class Resize(Augmentation):
    """Resize the image to a fixed ``shape`` (an int for a square, or ``(h, w)``)."""

    def __init__(self, shape: int | tuple[int, int], interp: int = Image.BILINEAR):
        super().__init__()
        if isinstance(shape, int):
            shape = (shape, shape)
        shape = tuple(shape)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        return ResizeTransform(image.shape[0], image.shape[1], self.shape[0], self.shape[1], self.interp)


class ResizeShortestEdge(Augmentation):
    """Resize so the shorter side is a sampled length, unless the longer side would exceed ``max_size``.

    Args:
        short_edge_length: with ``sample_style="range"``, ``(min, max)`` and the length is an integer drawn
            uniformly from ``[min, max]``; with ``"choice"``, the candidate lengths (one is chosen).
        max_size: upper bound on the longer side.
        sample_style: ``"range"`` or ``"choice"``.
        interp: PIL resampling filter.
    """

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"ResizeShortestEdge: sample_style must be 'range' or 'choice', got {sample_style!r}.")
        self.is_range = sample_style == "range"
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        short_edge_length = tuple(short_edge_length)
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(
                f"ResizeShortestEdge: sample_style='range' needs (min, max), got short_edge_length={short_edge_length}."
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return NoOpTransform()
        newh, neww = self.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, newh, neww, self.interp)

    @staticmethod
    def get_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int) -> tuple[int, int]:
        """``(newh, neww)`` after resizing ``(oldh, oldw)`` to the short side, capped by ``max_size``."""
        scale = short_edge_length * 1.0 / min(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        if max(newh, neww) > max_size:
            scale = max_size * 1.0 / max(newh, neww)
            newh, neww = newh * scale, neww * scale
        return int(newh + 0.5), int(neww + 0.5)


class ResizeScale(Augmentation):
    """Scale-jitter resize (large-scale jitter): fit the image in ``target * s``, ``s ~ U[min, max]``.

    The output keeps the aspect ratio and is the largest that fits inside ``(target_height * s,
    target_width * s)``.
    """

    def __init__(
        self, min_scale: float, max_scale: float, target_height: int, target_width: int, interp: int = Image.BILINEAR
    ):
        super().__init__()
        self._init(locals())

    def _get_resize(self, image: np.ndarray, scale: float) -> Transform:
        input_size = image.shape[:2]
        target_size = (self.target_height, self.target_width)
        target_scale_size = np.multiply(target_size, scale)
        output_scale = np.minimum(target_scale_size[0] / input_size[0], target_scale_size[1] / input_size[1])
        output_size = np.round(np.multiply(input_size, output_scale)).astype(int)
        return ResizeTransform(input_size[0], input_size[1], int(output_size[0]), int(output_size[1]), self.interp)

    def get_transform(self, image: np.ndarray) -> Transform:
        return self._get_resize(image, float(np.random.uniform(self.min_scale, self.max_scale)))


class RandomResize(Augmentation):
    """Resize to one of ``shape_list`` (each ``(h, w)`` or an int for a square), chosen uniformly."""

    def __init__(self, shape_list: Sequence[int | tuple[int, int]], interp: int = Image.BILINEAR):
        super().__init__()
        if len(shape_list) == 0:
            raise ValueError("RandomResize: `shape_list` is empty.")
        self.shape_list = [(s, s) if isinstance(s, int) else tuple(s) for s in shape_list]
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        shape_idx = np.random.randint(low=0, high=len(self.shape_list))
        h, w = self.shape_list[shape_idx]
        return ResizeTransform(image.shape[0], image.shape[1], h, w, self.interp)


class RandomRotation(Augmentation):
    """Rotate by a random angle (degrees, counter-clockwise) around a (possibly random) centre.

    Args:
        angle: ``(min, max)`` for ``sample_style="range"``, or candidate angles for ``"choice"``.
        expand: enlarge the canvas so nothing is cut off (then ``center`` is ignored).
        center: ``None`` (image centre) or ``[(x0, y0), (x1, y1)]`` relative ranges to sample the centre from.
        sample_style: ``"range"`` or ``"choice"``.
        interp: PIL resampling filter.
    """

    def __init__(
        self,
        angle: float | Sequence[float],
        expand: bool = True,
        center: Sequence[Sequence[float]] | None = None,
        sample_style: str = "range",
        interp: int | None = None,
    ):
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"RandomRotation: sample_style must be 'range' or 'choice', got {sample_style!r}.")
        self.is_range = sample_style == "range"
        if isinstance(angle, (float, int)):
            angle = (angle, angle)
        if center is not None and isinstance(center[0], (float, int)):
            center = (center, center)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        center = None
        if self.is_range:
            angle = float(np.random.uniform(self.angle[0], self.angle[1]))
            if self.center is not None:
                center = (
                    float(np.random.uniform(self.center[0][0], self.center[1][0])) * w,
                    float(np.random.uniform(self.center[0][1], self.center[1][1])) * h,
                )
        else:
            angle = float(np.random.choice(self.angle))
            if self.center is not None:
                c = self.center[np.random.randint(len(self.center))]
                center = (float(c[0]) * w, float(c[1]) * h)
        if angle % 360 == 0:
            return NoOpTransform()
        return RotationTransform(h, w, angle, expand=self.expand, center=center, interp=self.interp)


class FixedSizeCrop(Augmentation):
    """Crop a random ``crop_size`` window if the image is larger, then pad it to ``crop_size`` if smaller.

    Args:
        crop_size: ``(h, w)`` of the output.
        pad: pad images smaller than ``crop_size`` (on the bottom/right).
        pad_value: image padding value.
        seg_pad_value: segmentation padding value (the "ignore" label).
    """

    def __init__(
        self, crop_size: tuple[int, int], pad: bool = True, pad_value: float = 128.0, seg_pad_value: int = 255
    ):
        super().__init__()
        self._init(locals())

    def _get_crop(self, image: np.ndarray) -> Transform:
        input_size = image.shape[:2]
        output_size = self.crop_size
        max_offset = np.maximum(np.subtract(input_size, output_size), 0)
        offset = np.round(np.multiply(max_offset, np.random.uniform(0.0, 1.0))).astype(int)
        return CropTransform(
            int(offset[1]),
            int(offset[0]),
            int(min(output_size[1], input_size[1])),
            int(min(output_size[0], input_size[0])),
            int(input_size[1]),
            int(input_size[0]),
        )

    def _get_pad(self, image: np.ndarray) -> Transform:
        input_size = image.shape[:2]
        pad_size = np.maximum(np.subtract(self.crop_size, input_size), 0)
        original_size = np.minimum(input_size, self.crop_size)
        return PadTransform(
            0,
            0,
            int(pad_size[1]),
            int(pad_size[0]),
            int(original_size[1]),
            int(original_size[0]),
            self.pad_value,
            self.seg_pad_value,
        )

    def get_transform(self, image: np.ndarray) -> TransformList:
        transforms = [self._get_crop(image)]
        if self.pad:
            transforms.append(self._get_pad(image))
        return TransformList(transforms)


class RandomCrop(Augmentation):
    """Crop a random window whose size is given by ``crop_type`` and ``crop_size``.

    ``crop_type``:
      - ``"relative"``: ``crop_size = (h_frac, w_frac)`` of the image size.
      - ``"relative_range"``: fractions drawn uniformly from ``[crop_size[i], 1]``.
      - ``"absolute"``: ``crop_size = (h, w)`` in pixels (clipped to the image).
      - ``"absolute_range"``: ``crop_size = (min, max)`` pixels, h and w drawn independently from it.
    """

    _CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        super().__init__()
        if crop_type not in self._CROP_TYPES:
            raise ValueError(f"RandomCrop: crop_type must be one of {self._CROP_TYPES}, got {crop_type!r}.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        croph, cropw = self.get_crop_size((h, w))
        if not (h >= croph and w >= cropw):
            raise ValueError(f"RandomCrop: crop size {(croph, cropw)} exceeds the image size {(h, w)}.")
        h0 = int(np.random.randint(h - croph + 1))
        w0 = int(np.random.randint(w - cropw + 1))
        return CropTransform(w0, h0, cropw, croph)

    def get_crop_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Sample the ``(crop_h, crop_w)`` for an image of ``image_size = (h, w)``."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            crop_size = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = crop_size + np.random.rand(2) * (1 - crop_size)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        if self.crop_size[0] > self.crop_size[1]:
            raise ValueError(f"RandomCrop: absolute_range needs crop_size=(min, max), got {self.crop_size}.")
        ch = int(np.random.randint(min(h, self.crop_size[0]), min(h, self.crop_size[1]) + 1))
        cw = int(np.random.randint(min(w, self.crop_size[0]), min(w, self.crop_size[1]) + 1))
        return ch, cw


class RandomCrop_CategoryAreaConstraint(Augmentation):
    """A :class:`RandomCrop` retried (up to 10 times) until no single semantic category covers more than
    ``single_category_max_area`` of the crop (labels equal to ``ignored_category`` are not counted).

    Inputs: ``image`` and ``sem_seg``.
    """

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: int | None = None,
    ):
        super().__init__()
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self._init(locals())

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray) -> Transform:
        if sem_seg is None:
            raise ValueError("RandomCrop_CategoryAreaConstraint needs `sem_seg` in its AugInput.")
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        h, w = sem_seg.shape
        for _ in range(10):
            crop_size = self.crop_aug.get_crop_size((h, w))
            y0 = int(np.random.randint(h - crop_size[0] + 1))
            x0 = int(np.random.randint(w - crop_size[1] + 1))
            sem_seg_temp = sem_seg[y0 : y0 + crop_size[0], x0 : x0 + crop_size[1]]
            labels, cnt = np.unique(sem_seg_temp, return_counts=True)
            if self.ignored_category is not None:
                cnt = cnt[labels != self.ignored_category]
            if len(cnt) > 1 and np.max(cnt) < np.sum(cnt) * self.single_category_max_area:
                break
        return CropTransform(x0, y0, crop_size[1], crop_size[0])


class RandomExtent(Augmentation):
    """Crop a random sub-rectangle (which may extend beyond the image, padding with 0) and resize it to the
    rectangle's size.

    Args:
        scale_range: ``(l, h)``: the rectangle's size relative to the image is drawn from ``[l, h]``.
        shift_range: ``(x, y)``: the rectangle centre moves by up to ``shift/2`` of the image size.
    """

    def __init__(self, scale_range: tuple[float, float], shift_range: tuple[float, float]):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        img_h, img_w = image.shape[:2]
        src_rect = np.array([-0.5 * img_w, -0.5 * img_h, 0.5 * img_w, 0.5 * img_h])
        src_rect *= np.random.uniform(self.scale_range[0], self.scale_range[1])
        src_rect[0::2] += self.shift_range[0] * img_w * (np.random.rand() - 0.5)
        src_rect[1::2] += self.shift_range[1] * img_h * (np.random.rand() - 0.5)
        src_rect[0::2] += 0.5 * img_w
        src_rect[1::2] += 0.5 * img_h
        output_size = (int(src_rect[3] - src_rect[1]), int(src_rect[2] - src_rect[0]))
        return ExtentTransform(src_rect=tuple(src_rect.tolist()), output_size=output_size)


class RandomContrast(Augmentation):
    """Blend the image with its mean by a weight drawn from ``[intensity_min, intensity_max]``
    (1 keeps the image, < 1 lowers contrast, > 1 raises it)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=image.mean(), src_weight=1 - w, dst_weight=w)


class RandomBrightness(Augmentation):
    """Scale pixel values by a weight drawn from ``[intensity_min, intensity_max]`` (blend with black)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=0, src_weight=1 - w, dst_weight=w)


class RandomSaturation(Augmentation):
    """Blend an RGB image with its grayscale version by a weight drawn from ``[intensity_min, intensity_max]``
    (the image must be ``HxWx3`` in RGB order)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"RandomSaturation only works on HxWx3 RGB images, got shape {image.shape}.")
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        grayscale = image.dot([0.299, 0.587, 0.114])[:, :, np.newaxis]
        return BlendTransform(src_image=grayscale, src_weight=1 - w, dst_weight=w)


class RandomLighting(Augmentation):
    """AlexNet-style PCA lighting noise: add ``eigvecs @ (alpha * eigvals)`` with ``alpha ~ N(0, scale)``,
    using the ImageNet RGB principal components (pixel range 0..255, RGB order)."""

    def __init__(self, scale: float):
        super().__init__()
        self._init(locals())
        self.eigen_vecs = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
        self.eigen_vals = np.array([0.2175, 0.0188, 0.0045]) * 255.0

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"RandomLighting only works on HxWx3 RGB images, got shape {image.shape}.")
        weights = np.random.normal(scale=self.scale, size=3)
        return BlendTransform(src_image=self.eigen_vecs.dot(weights * self.eigen_vals), src_weight=1.0, dst_weight=1.0)


class MinIoURandomCrop(Augmentation):
    """SSD-style crop: pick a minimum IoU from ``min_ious`` (or no crop), then sample crops until one overlaps
    every box by at least that IoU and contains at least one box centre; boxes are XYXY_ABS.

    Args:
        min_ious: candidate minimum IoUs between the crop and the boxes.
        min_crop_size: minimum crop side, relative to the image side.
        mode_trials: how many IoU thresholds to try before giving up (no crop).
        crop_trials: crops sampled per threshold.
    """

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        min_crop_size: float = 0.3,
        mode_trials: int = 1000,
        crop_trials: int = 50,
    ):
        super().__init__()
        self.min_ious = tuple(min_ious)
        self.sample_mode = (1, *self.min_ious, 0)
        self.min_crop_size = min_crop_size
        self.mode_trials = mode_trials
        self.crop_trials = crop_trials

    def get_transform(self, image: np.ndarray, boxes: np.ndarray | None) -> Transform:
        if boxes is None:
            return NoOpTransform()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        h, w = image.shape[:2]
        for _ in range(self.mode_trials):
            mode = self.sample_mode[np.random.randint(len(self.sample_mode))]
            if mode == 1:
                return NoOpTransform()
            min_iou = mode
            for _ in range(self.crop_trials):
                new_w = np.random.uniform(self.min_crop_size * w, w)
                new_h = np.random.uniform(self.min_crop_size * h, h)
                if new_h / new_w < 0.5 or new_h / new_w > 2:
                    continue
                left = np.random.uniform(w - new_w)
                top = np.random.uniform(h - new_h)
                patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)])
                if patch[2] == patch[0] or patch[3] == patch[1]:
                    continue
                if len(boxes) > 0:
                    if _patch_iou(patch, boxes).min() < min_iou:
                        continue
                    center = (boxes[:, :2] + boxes[:, 2:]) / 2
                    inside = (
                        (center[:, 0] > patch[0])
                        & (center[:, 1] > patch[1])
                        & (center[:, 0] < patch[2])
                        & (center[:, 1] < patch[3])
                    )
                    if not inside.any():
                        continue
                return CropTransform(int(patch[0]), int(patch[1]), int(patch[2] - patch[0]), int(patch[3] - patch[1]))
        return NoOpTransform()


def _patch_iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box ``patch`` with each of ``(N, 4)`` ``boxes``."""
    ious = pairwise_iou(
        Boxes(torch.as_tensor(patch, dtype=torch.float64).reshape(1, 4)),
        Boxes(torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)),
    )
    return ious.reshape(-1).numpy()
