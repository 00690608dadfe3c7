"""Transforms (deterministic) and augmentations (random policies that produce transforms).

Names follow ``detectron2.data.transforms``; fvcore's transforms are re-exported.
"""

from . import augmentation, augmentation_impl, transform
from .augmentation import (
    AugInput,
    Augmentation,
    AugmentationList,
    StandardAugInput,
    TransformGen,
    apply_augmentations,
    apply_transform_gens,
)
from .augmentation_impl import (
    FixedSizeCrop,
    MinIoURandomCrop,
    RandomApply,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomExtent,
    RandomFlip,
    RandomLighting,
    RandomResize,
    RandomRotation,
    RandomSaturation,
    Resize,
    ResizeScale,
    ResizeShortestEdge,
)
from .transform import (
    BlendTransform,
    ColorTransform,
    CropTransform,
    ExtentTransform,
    GridSampleTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    PILColorTransform,
    ResizeTransform,
    RotationTransform,
    ScaleTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
