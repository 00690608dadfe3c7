"""Augmentations: policies that *sample* a deterministic :class:`Transform` from their inputs.

An :class:`Augmentation` declares which inputs it needs through ``input_args`` (by default the parameter
names of its ``get_transform``, e.g. ``("image",)`` or ``("image", "boxes")``), draws its randomness from
NumPy's global RNG (``np.random``) so that seeding NumPy per sample makes it reproducible, and returns the
transform it chose. :class:`AugInput` carries the data (image, boxes, semantic segmentation) and applies a
transform to all of it in place.

Example::

    aug_input = AugInput(image, boxes=boxes, sem_seg=sem_seg)
    transforms = AugmentationList([ResizeShortestEdge(800, 1333), RandomFlip()])(aug_input)
    image, boxes = aug_input.image, aug_input.boxes
    polygons = transforms.apply_polygons(polygons)      # same geometric change on other data
"""

from __future__ import annotations

import functools
import inspect
import pprint
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .transform import Transform, TransformList

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "StandardAugInput",
    "TransformGen",
    "apply_augmentations",
    "apply_transform_gens",
]


def _check_img_dtype(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"[Augmentation] Needs a numpy array image, got {type(img)}.")
    if np.issubdtype(img.dtype, np.integer) and img.dtype != np.uint8:
        raise TypeError(f"[Augmentation] Got an image of type {img.dtype}; integer images must be uint8.")
    if img.ndim not in (2, 3):
        raise ValueError(f"[Augmentation] Expected an HxW or HxWxC image, got shape {img.shape}.")


def _names_of(parameters: list[inspect.Parameter]) -> tuple[str, ...]:
    if len(parameters) == 1:  # a single input is the image, whatever its name
        return ("image",)
    var = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(p.name for p in parameters if p.kind not in var)


@functools.cache
def _method_input_names(get_transform: Callable) -> tuple[str, ...]:
    """:func:`_input_names` of a ``get_transform`` method, from its function (``self`` dropped). Cached per
    function: ``inspect.signature`` was paid for every augmentation of every image before."""
    return _names_of(list(inspect.signature(get_transform).parameters.values())[1:])


def _input_names(aug: Augmentation) -> tuple[str, ...]:
    """Names of the :class:`AugInput` attributes ``aug.get_transform`` takes: ``aug.input_args``, or its
    parameter names."""
    if aug.input_args is not None:
        return tuple(aug.input_args)
    get_transform = aug.get_transform
    if inspect.ismethod(get_transform) and get_transform.__self__ is aug:
        return _method_input_names(get_transform.__func__)
    return _names_of(list(inspect.signature(get_transform).parameters.values()))  # e.g. set on the instance


def _get_aug_input_args(aug: Augmentation, aug_input: Any) -> list[Any]:
    """The attributes of ``aug_input`` named by ``aug.input_args``, in order."""
    names = _input_names(aug)
    args = []
    for name in names:
        if not hasattr(aug_input, name):
            raise AttributeError(
                f"{type(aug).__name__}.get_transform needs input '{name}' (input_args={names}), but the "
                f"{type(aug_input).__name__} given to it has no attribute '{name}'."
            )
        args.append(getattr(aug_input, name))
    return args


class Augmentation:
    """Base class of augmentations: ``get_transform(*inputs)`` returns a :class:`Transform`.

    Subclasses implement ``get_transform`` with parameters named after the :class:`AugInput` attributes they
    need (``image``, ``boxes``, ``sem_seg``, ...), or set ``input_args`` explicitly. All randomness must come
    from ``np.random`` (the global NumPy RNG), e.g. through :meth:`_rand_range`.
    """

    input_args: tuple[str, ...] | None = None
    """Names of the :class:`AugInput` attributes passed to ``get_transform``; ``None``: its parameter names."""

    def _init(self, params: dict | None = None) -> None:
        if params:
            for k, v in params.items():
                if k != "self" and not k.startswith("_"):
                    setattr(self, k, v)

    def get_transform(self, *args: Any) -> Transform:
        """Sample a deterministic transform from the inputs named by ``input_args``."""
        raise NotImplementedError

    def __call__(self, aug_input: Any) -> Transform:
        """Sample a transform from ``aug_input``, apply it to ``aug_input`` in place and return it.

        Args:
            aug_input: an object with the attributes named in ``input_args`` and a ``transform(tfm)``
                method, normally an :class:`AugInput`.
        """
        args = _get_aug_input_args(self, aug_input)
        tfm = self.get_transform(*args)
        if not isinstance(tfm, (Transform, TransformList)):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform, got {type(tfm)}. A Python "
                "function taking and returning an image can be wrapped in T.ColorTransform."
            )
        aug_input.transform(tfm)
        return tfm

    def _rand_range(self, low: float = 1.0, high: float | None = None, size: Any = None) -> Any:
        """Uniform float in ``[low, high)`` (``[0, low)`` when ``high`` is None) from ``np.random``."""
        if high is None:
            low, high = 0, low
        if size is None:
            size = []
        return np.random.uniform(low, high, size)

    def __repr__(self) -> str:
        try:
            sig = inspect.signature(self.__init__)
            argstr = []
            for name, param in sig.parameters.items():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                if not hasattr(self, name):
                    raise AttributeError(name)
                attr = getattr(self, name)
                if param.default is not param.empty and _same(attr, param.default):
                    continue
                text = pprint.pformat(attr)
                if "\n" in text:
                    text = "..."
                argstr.append(f"{name}={text}")
            return f"{type(self).__name__}({', '.join(argstr)})"
        except AttributeError:
            return super().__repr__()

    __str__ = __repr__


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # e.g. numpy arrays compare element-wise
        return False


class _TransformToAug(Augmentation):
    """An augmentation that always returns one fixed transform."""

    def __init__(self, tfm: Transform):
        self.tfm = tfm

    def get_transform(self, *args: Any) -> Transform:
        return self.tfm

    def __repr__(self) -> str:
        return repr(self.tfm)

    __str__ = __repr__


def _transform_to_aug(tfm_or_aug: Transform | Augmentation) -> Augmentation:
    if isinstance(tfm_or_aug, Augmentation):
        return tfm_or_aug
    if isinstance(tfm_or_aug, Transform):
        return _TransformToAug(tfm_or_aug)
    raise TypeError(f"Expected an Augmentation or a Transform, got {type(tfm_or_aug)}.")


class AugmentationList(Augmentation):
    """Apply a sequence of augmentations (or fixed transforms) one after another.

    Calling it returns the :class:`TransformList` of everything that was applied.
    """

    def __init__(self, augs: Sequence[Augmentation | Transform]):
        super().__init__()
        self.augs = [_transform_to_aug(x) for x in augs]

    def __call__(self, aug_input: Any) -> TransformList:
        tfms = []
        for aug in self.augs:
            tfms.append(aug(aug_input))
        return TransformList(tfms)

    def __repr__(self) -> str:
        return f"AugmentationList[{', '.join(str(a) for a in self.augs)}]"

    __str__ = __repr__


class AugInput:
    """The inputs of augmentations: an image plus optional boxes and semantic segmentation.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, uint8 or float.
        boxes: ``(N, 4)`` float XYXY_ABS boxes, or None.
        sem_seg: ``(H, W)`` integer segmentation map, or None.
    """

    def __init__(self, image: np.ndarray, *, boxes: np.ndarray | None = None, sem_seg: np.ndarray | None = None):
        _check_img_dtype(image)
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Apply ``tfm`` in place to the image and, when present, the boxes and segmentation."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(self, augmentations: Sequence[Augmentation | Transform]) -> TransformList:
        """Apply augmentations in place; returns the transforms that were applied."""
        return AugmentationList(augmentations)(self)


def apply_augmentations(augmentations: Sequence[Augmentation | Transform], inputs: Any) -> tuple[Any, TransformList]:
    """Apply ``augmentations`` to ``inputs``: an image array (returns the new image) or an :class:`AugInput`
    (modified in place and returned). Returns ``(result, transforms)``."""
    if isinstance(inputs, np.ndarray):
        image_only = True
        inputs = AugInput(inputs)
    else:
        image_only = False
    tfms = inputs.apply_augmentations(augmentations)
    return (inputs.image if image_only else inputs), tfms


apply_transform_gens = apply_augmentations
"""Alias of :func:`apply_augmentations` (detectron2's older name)."""

TransformGen = Augmentation
"""Alias of :class:`Augmentation` (detectron2's older name)."""

StandardAugInput = AugInput
"""Alias of :class:`AugInput`."""
