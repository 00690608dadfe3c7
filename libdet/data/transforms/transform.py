"""Deterministic transforms: fvcore's, plus resize, rotation, extent and colour transforms.

A :class:`Transform` holds everything it needs (sizes, angle, ...) and applies the *same* geometric change to
an image (``apply_image``), coordinates (``apply_coords``), boxes, polygons and segmentation maps. The
randomness lives in :mod:`~libdet.data.transforms.augmentation_impl`, which samples these transforms.

Coordinates are continuous: pixel ``(i, j)`` covers ``[j, j + 1] x [i, i + 1]``, so an image of width ``W``
has x coordinates in ``[0, W]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import (
    BlendTransform,
    CropTransform,
    GridSampleTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ScaleTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from PIL import Image

__all__ = [
    "BlendTransform",
    "ColorTransform",
    "CropTransform",
    "ExtentTransform",
    "GridSampleTransform",
    "HFlipTransform",
    "NoOpTransform",
    "PILColorTransform",
    "PadTransform",
    "ResizeTransform",
    "RotationTransform",
    "ScaleTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
]

_PIL_TO_TORCH_INTERP = {
    Image.NEAREST: "nearest",
    Image.BILINEAR: "bilinear",
    Image.BICUBIC: "bicubic",
}


def _image_through_pil(img: np.ndarray, func: Callable[[Image.Image, int], Image.Image], interp: int) -> np.ndarray:
    """Apply a PIL geometric ``func(pil_image, resample)`` to an ``HxW``/``HxWxC`` uint8 or float array.

    uint8 images with 1 or 3 channels go through PIL in one piece; other channel counts and float images are
    processed one channel at a time (float channels in PIL's 32-bit float mode), so any dtype and channel
    count is supported and the dtype is preserved.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"Expected an HxW or HxWxC image, got shape {img.shape}.")
    if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3)):
        squeeze = img.ndim == 3 and img.shape[2] == 1
        pil = Image.fromarray(img[:, :, 0] if squeeze else img)
        out = np.asarray(func(pil, interp))
        return out[:, :, None] if squeeze else out
    channels = img[:, :, None] if img.ndim == 2 else img
    outs = []
    for c in range(channels.shape[2]):
        plane = np.ascontiguousarray(channels[:, :, c])
        if plane.dtype == np.uint8:
            outs.append(np.asarray(func(Image.fromarray(plane), interp)))
        else:
            res = np.asarray(func(Image.fromarray(plane.astype(np.float32), mode="F"), interp))
            outs.append(res.astype(img.dtype))
    out = np.stack(outs, axis=2)
    return out[:, :, 0] if img.ndim == 2 else out


class ExtentTransform(Transform):
    """Crop (or extend, padding with ``fill``) the sub-rectangle ``src_rect`` and resize it to ``output_size``.

    Args:
        src_rect: ``(x0, y0, x1, y1)`` source rectangle in input coordinates; may exceed the image.
        output_size: ``(h, w)`` of the output image.
        interp: PIL resampling filter for images (segmentation always uses nearest).
        fill: value for pixels outside the input image.
    """

    def __init__(
        self, src_rect: Sequence[float], output_size: tuple[int, int], interp: int = Image.BILINEAR, fill: float = 0
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        h, w = self.output_size
        rect = tuple(float(v) for v in self.src_rect)

        def func(pil: Image.Image, resample: int) -> Image.Image:
            if pil.mode in ("F", "I"):
                fill = self.fill
            elif pil.mode == "RGB":
                fill = (int(self.fill),) * 3
            else:
                fill = int(self.fill)
            return pil.transform((w, h), Image.EXTENT, data=rect, resample=resample, fillcolor=fill)

        return _image_through_pil(img, func, self.interp if interp is None else interp)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        h, w = self.output_size
        x0, y0, x1, y1 = (float(v) for v in self.src_rect)
        coords = coords.astype(np.float64, copy=True)
        coords[:, 0] = (coords[:, 0] - x0) * (w / (x1 - x0))
        coords[:, 1] = (coords[:, 1] - y0) * (h / (y1 - y0))
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=Image.NEAREST)


class ResizeTransform(Transform):
    """Resize an image of size ``(h, w)`` to ``(new_h, new_w)``.

    uint8 images are resized with PIL (``interp`` is a PIL filter, default bilinear); float images with
    ``torch.nn.functional.interpolate``. Segmentation maps always use nearest neighbour.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int | None = None):
        super().__init__()
        if interp is None:
            interp = Image.BILINEAR
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform: image of shape {img.shape[:2]} does not match the transform's input size "
                f"{(self.h, self.w)}."
            )
        interp_method = self.interp if interp is None else interp
        if img.dtype == np.uint8:
            resize = lambda pil, resample: pil.resize((self.new_w, self.new_h), resample)  # noqa: E731
            if img.ndim == 3 and img.shape[2] == 3 and img.strides[2] < 0 and img[:, :, ::-1].flags.c_contiguous:
                # A BGR image of read_image is a channel-reversed view of an RGB array: resize that array (each
                # channel is resized on its own) and reverse the result, instead of copying the view for PIL.
                return _image_through_pil(img[:, :, ::-1], resize, interp_method)[:, :, ::-1]
            return _image_through_pil(img, resize, interp_method)
        if img.ndim > 4:
            raise ValueError(f"ResizeTransform: expected at most 4 image dims, got shape {img.shape}.")
        shape = list(img.shape)
        shape_4d = shape[:2] + [1] * (4 - len(shape)) + shape[2:]
        t = torch.from_numpy(np.ascontiguousarray(img)).view(shape_4d).permute(2, 3, 0, 1)  # N, C, H, W
        mode = _PIL_TO_TORCH_INTERP.get(interp_method, "bilinear")
        align = None if mode == "nearest" else False
        t = F.interpolate(
            t.float() if t.dtype != torch.float64 else t, (self.new_h, self.new_w), mode=mode, align_corners=align
        )
        shape[:2] = (self.new_h, self.new_w)
        return t.permute(2, 3, 0, 1).reshape(shape).numpy().astype(img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = coords.astype(np.float64, copy=True)
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> Transform:
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


class RotationTransform(Transform):
    """Rotate an ``(h, w)`` image counter-clockwise by ``angle`` degrees around ``center``.

    Args:
        h, w: input image size.
        angle: degrees, counter-clockwise.
        expand: grow the canvas so the whole rotated image fits (``center`` is then ignored).
        center: ``(x, y)`` rotation centre; default the image centre.
        interp: PIL resampling filter (default bilinear).
    """

    def __init__(
        self,
        h: int,
        w: int,
        angle: float,
        expand: bool = True,
        center: tuple[float, float] | None = None,
        interp: int | None = None,
    ):
        super().__init__()
        image_center = np.array((w / 2, h / 2))
        if center is None:
            center = image_center
        if interp is None:
            interp = Image.BILINEAR
        abs_cos, abs_sin = abs(np.cos(np.deg2rad(angle))), abs(np.sin(np.deg2rad(angle)))
        if expand:
            bound_w, bound_h = np.rint([h * abs_sin + w * abs_cos, h * abs_cos + w * abs_sin]).astype(int)
        else:
            bound_w, bound_h = w, h
        self._set_attributes(locals())
        self.rm_coords = self._rotation_matrix()

    def _rotation_matrix(self) -> np.ndarray:
        """2x3 affine matrix mapping input coordinates to output coordinates."""
        theta = np.deg2rad(self.angle)
        cos, sin = np.cos(theta), np.sin(theta)
        cx, cy = float(self.center[0]), float(self.center[1])
        # Counter-clockwise on screen (y points down): x' = cos*dx + sin*dy, y' = -sin*dx + cos*dy.
        rot = np.array([[cos, sin], [-sin, cos]])
        translation = np.array([cx, cy]) - rot @ np.array([cx, cy])
        if self.expand:
            # Move the rotated image centre to the centre of the enlarged canvas.
            rotated_center = rot @ np.asarray(self.image_center, dtype=np.float64) + translation
            translation = translation + np.array([self.bound_w / 2, self.bound_h / 2]) - rotated_center
        return np.concatenate([rot, translation[:, None]], axis=1)

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        if len(img) == 0 or self.angle % 360 == 0:
            return img
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"RotationTransform: image of shape {img.shape[:2]} does not match the transform's input size "
                f"{(self.h, self.w)}."
            )
        full = np.vstack([self.rm_coords, [0, 0, 1]])
        inv = np.linalg.inv(full)[:2]  # PIL wants output -> input
        data = tuple(inv.reshape(-1).tolist())
        size = (int(self.bound_w), int(self.bound_h))
        return _image_through_pil(
            img,
            lambda pil, resample: pil.transform(size, Image.AFFINE, data=data, resample=resample),
            self.interp if interp is None else interp,
        )

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64)
        if len(coords) == 0 or self.angle % 360 == 0:
            return coords
        return coords @ self.rm_coords[:, :2].T + self.rm_coords[:, 2]

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> Transform:
        """Rotate back (expanding) and crop the original-size window out of the re-rotated canvas."""
        if not self.expand:
            raise NotImplementedError("RotationTransform.inverse() is only defined for expand=True.")
        rotation = RotationTransform(self.bound_h, self.bound_w, -self.angle, True, None, self.interp)
        crop_x = (rotation.bound_w - self.w) // 2
        crop_y = (rotation.bound_h - self.h) // 2
        crop = CropTransform(crop_x, crop_y, self.w, self.h)
        return TransformList([rotation, crop])


class ColorTransform(Transform):
    """Apply ``op(image) -> image`` to the pixel values only; geometry is unchanged."""

    def __init__(self, op: Callable[[np.ndarray], np.ndarray]):
        if not callable(op):
            raise TypeError(f"ColorTransform: `op` must be callable, got {type(op)}.")
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self.op(img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def inverse(self) -> Transform:
        return NoOpTransform()

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class PILColorTransform(ColorTransform):
    """A :class:`ColorTransform` whose ``op`` takes and returns a ``PIL.Image`` (e.g. ``ImageEnhance``)."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.asarray(self.op(Image.fromarray(img)))


def _hflip_rotated_box(transform: HFlipTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    """Flip ``(N, 5)`` boxes ``(cx, cy, w, h, angle_deg)`` horizontally: x mirrors and the angle negates."""
    rotated_boxes = np.array(rotated_boxes, dtype=np.float64)
    rotated_boxes[:, 0] = transform.width - rotated_boxes[:, 0]
    rotated_boxes[:, 4] = -rotated_boxes[:, 4]
    return rotated_boxes


def _vflip_rotated_box(transform: VFlipTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    """Flip ``(N, 5)`` rotated boxes vertically: y mirrors and the angle negates."""
    rotated_boxes = np.array(rotated_boxes, dtype=np.float64)
    rotated_boxes[:, 1] = transform.height - rotated_boxes[:, 1]
    rotated_boxes[:, 4] = -rotated_boxes[:, 4]
    return rotated_boxes


def _resize_rotated_box(transform: ResizeTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    """Resize ``(N, 5)`` rotated boxes. With unequal x/y scales a rotated rectangle becomes a parallelogram;
    the result keeps the scaled height edge's direction and the lengths of both scaled edges."""
    sx = transform.new_w * 1.0 / transform.w
    sy = transform.new_h * 1.0 / transform.h
    rotated_boxes = np.array(rotated_boxes, dtype=np.float64)
    rotated_boxes[:, 0] *= sx
    rotated_boxes[:, 1] *= sy
    theta = np.deg2rad(rotated_boxes[:, 4])
    c, s = np.cos(theta), np.sin(theta)
    rotated_boxes[:, 2] *= np.sqrt((sx * c) ** 2 + (sy * s) ** 2)
    rotated_boxes[:, 3] *= np.sqrt((sx * s) ** 2 + (sy * c) ** 2)
    rotated_boxes[:, 4] = np.rad2deg(np.arctan2(sx * s, sy * c))
    return rotated_boxes


HFlipTransform.register_type("rotated_box", _hflip_rotated_box)
VFlipTransform.register_type("rotated_box", _vflip_rotated_box)
ResizeTransform.register_type("rotated_box", _resize_rotated_box)
NoOpTransform.register_type("rotated_box", lambda t, x: x)
