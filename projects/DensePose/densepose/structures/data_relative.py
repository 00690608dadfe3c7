"""DensePose chart annotations of one person, relative to its box, and their horizontal-flip semantics.

The COCO DensePose extension annotates a person with points (``dp_x``, ``dp_y`` in ``[0, 256]``, relative to the
person's box: 0 is the box's left/top edge, 256 its right/bottom edge), the body part of each point (``dp_I``, 1..24),
its chart coordinates (``dp_U``, ``dp_V`` in ``[0, 1]``) and 14 coarse body-part masks (``dp_masks``: COCO RLEs of a
256 x 256 grid over the box). Because all of these are relative to the box, resizes and crops change nothing: only a
horizontal flip does (the box is flipped by the mapper): x becomes ``256 - x``, left and right parts swap and U/V
are mirrored through the chart symmetry tables (:class:`DensePoseTransformData`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "DENSEPOSE_KEYS",
    "MASK_LABEL_SYMMETRIES",
    "POINT_LABEL_SYMMETRIES",
    "DensePoseDataRelative",
    "DensePoseList",
    "DensePoseTransformData",
]

#: The annotation keys of the COCO DensePose extension.
DENSEPOSE_KEYS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "dp_masks")
N_BODY_PARTS = 14  # coarse parts of dp_masks
N_PART_LABELS = 24  # fine parts (charts) of dp_I
MASK_SIZE = 256

# Flip permutations (index = old label, value = new label; 0 = background). Fine parts, 1-based: 1/2 torso back/
# front, 3/4 right/left hand, 5/6 left/right foot, then right/left pairs of upper legs (7-10), lower legs
# (11-14), upper arms (15-18), lower arms (19-22) and the head's right/left halves (23/24): each pair swaps.
POINT_LABEL_SYMMETRIES = (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23)
# Coarse parts, 1-based: 1 torso, 2/3 right/left hand, 4/5 left/right foot, 6/7 upper legs, 8/9 lower legs,
# 10/11 upper arms, 12/13 lower arms (right/left pairs), 14 head.
MASK_LABEL_SYMMETRIES = (0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14)


class DensePoseTransformData:
    """What a horizontal flip does to DensePose labels: the part permutations above and, per fine part, the
    chart symmetry tables ``U_transforms`` / ``V_transforms`` (``(24, 256, 256)``: the mirrored U (resp. V) of the
    point of part ``i + 1`` with chart coordinates ``(u, v)`` is ``table[i, round_down(v * 255), round_down(u * 255)]``).

    detectron2 reads the tables of the SMPL body model from ``UV_symmetry_transforms.mat``; they are not bundled
    here (no downloads), so they come from a file given by path (see :meth:`load`).
    """

    def __init__(self, *, u_transforms: torch.Tensor, v_transforms: torch.Tensor):
        """
        Args:
            u_transforms: ``(24, 256, 256)`` float table of mirrored U, indexed ``[part - 1, v, u]``.
            v_transforms: ``(24, 256, 256)`` float table of mirrored V.
        """
        expected = (N_PART_LABELS, MASK_SIZE, MASK_SIZE)
        for name, t in (("u_transforms", u_transforms), ("v_transforms", v_transforms)):
            if tuple(t.shape) != expected:
                raise ValueError(f"DensePoseTransformData: `{name}` must have shape {expected}, got {tuple(t.shape)}.")
        self.uv_symmetries = {"U_transforms": u_transforms.float(), "V_transforms": v_transforms.float()}
        self.point_label_symmetries = torch.tensor(POINT_LABEL_SYMMETRIES, dtype=torch.long)
        self.mask_label_symmetries = torch.tensor(MASK_LABEL_SYMMETRIES, dtype=torch.long)

    @staticmethod
    def load(path: str) -> DensePoseTransformData:
        """Read the symmetry tables from a MATLAB ``.mat`` file (detectron2's ``UV_symmetry_transforms.mat``
        layout: ``U_transforms`` and ``V_transforms``, each a 1 x 24 cell array of 256 x 256 tables) or a numpy
        ``.npz`` file with ``U_transforms`` / ``V_transforms`` arrays of shape ``(24, 256, 256)``."""
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"DensePose UV symmetry tables not found: '{path}'. Horizontal flips of DensePose annotations need "
                "detectron2's UV_symmetry_transforms.mat (from the DensePose release; not bundled with libdet) or "
                "an .npz with U_transforms/V_transforms of shape (24, 256, 256); set the path of the mapper's "
                "`uv_symmetries_path`, or train without horizontal flips."
            )
        tables = {}
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                for key in ("U_transforms", "V_transforms"):
                    if key not in data:
                        raise KeyError(f"DensePose UV symmetry file '{path}' has no array '{key}'.")
                    tables[key] = torch.from_numpy(np.asarray(data[key], dtype=np.float32))
        else:
            from scipy.io import loadmat

            data = loadmat(path)
            for key in ("U_transforms", "V_transforms"):
                if key not in data:
                    raise KeyError(f"DensePose UV symmetry file '{path}' has no variable '{key}'.")
                cells = data[key]
                tables[key] = torch.stack(
                    [torch.from_numpy(np.asarray(cells[0, i], dtype=np.float32)) for i in range(cells.shape[1])]
                )
        return DensePoseTransformData(u_transforms=tables["U_transforms"], v_transforms=tables["V_transforms"])


def _decode_part_masks(dp_masks: Sequence[Any], where: str) -> torch.Tensor:
    """The ``(256, 256)`` uint8 coarse-part map (0 background, 1..14) of the 14 ``dp_masks`` RLEs (empty = absent)."""
    import pycocotools.mask as mask_utils

    if len(dp_masks) != N_BODY_PARTS:
        raise ValueError(f"{where}: `dp_masks` must list {N_BODY_PARTS} part masks, got {len(dp_masks)}.")
    segm = np.zeros((MASK_SIZE, MASK_SIZE), dtype=np.uint8)
    for i, rle in enumerate(dp_masks):
        if not rle:
            continue
        if isinstance(rle, dict) and isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        mask = mask_utils.decode(rle)
        if mask.shape != (MASK_SIZE, MASK_SIZE):
            raise ValueError(f"{where}: dp_masks[{i}] decodes to shape {mask.shape}, expected (256, 256).")
        segm[mask > 0] = i + 1
    return torch.from_numpy(segm)


class DensePoseDataRelative:
    """The DensePose annotation of one person (tensors, coordinates relative to its box; see module doc).

    Attributes:
        x, y: ``(P,)`` float point coordinates in ``[0, 256]`` over the box.
        i: ``(P,)`` float fine part labels 1..24.
        u, v: ``(P,)`` float chart coordinates in ``[0, 1]``.
        segm: ``(256, 256)`` long coarse-part map over the box (0 background, 1..14).
    """

    def __init__(self, annotation: dict[str, Any], *, where: str = "DensePose annotation"):
        """
        Args:
            annotation: an annotation dict with all of :data:`DENSEPOSE_KEYS`.
            where: names the annotation in error messages (file, annotation id).
        """
        missing = [k for k in DENSEPOSE_KEYS if k not in annotation]
        if missing:
            raise KeyError(f"{where}: missing DensePose keys {missing}.")
        values = [torch.as_tensor(np.asarray(annotation[k], dtype=np.float32)).reshape(-1) for k in DENSEPOSE_KEYS[:5]]
        if len({v.numel() for v in values}) != 1:
            sizes = {k: v.numel() for k, v in zip(DENSEPOSE_KEYS[:5], values)}
            raise ValueError(f"{where}: dp_x, dp_y, dp_I, dp_U, dp_V must have the same length, got {sizes}.")
        self.x, self.y, self.i, self.u, self.v = values
        if self.i.numel() and (self.i.min() < 1 or self.i.max() > N_PART_LABELS):
            raise ValueError(
                f"{where}: dp_I must be in 1..{N_PART_LABELS}, got values in [{self.i.min()}, {self.i.max()}]."
            )
        self.segm = _decode_part_masks(annotation["dp_masks"], where).long()

    @staticmethod
    def validate_annotation(annotation: dict[str, Any]) -> bool:
        """Whether ``annotation`` carries DensePose data (all of :data:`DENSEPOSE_KEYS`)."""
        return all(k in annotation for k in DENSEPOSE_KEYS)

    def to(self, device: torch.device | str) -> DensePoseDataRelative:
        """A copy with every tensor on ``device``."""
        out = object.__new__(DensePoseDataRelative)
        for k in ("x", "y", "i", "u", "v", "segm"):
            setattr(out, k, getattr(self, k).to(device))
        return out

    def apply_transform(self, transforms: Any, transform_data: DensePoseTransformData | None) -> None:
        """Apply image transforms (in place). Only an odd number of horizontal flips changes box-relative
        annotations; it needs ``transform_data``."""
        from libdet.data import transforms as T

        num_flips = sum(isinstance(t, T.HFlipTransform) for t in getattr(transforms, "transforms", [transforms]))
        if num_flips % 2 == 0:
            return
        if transform_data is None:
            raise ValueError(
                "DensePoseDataRelative.apply_transform: a horizontal flip needs DensePoseTransformData (the UV "
                "symmetry tables); give the mapper `uv_symmetries_path`."
            )
        self.hflip(transform_data)

    def hflip(self, transform_data: DensePoseTransformData) -> None:
        """Mirror the annotation (in place): x -> 256 - x, the mask left-right, left/right parts swapped and U/V
        mirrored through the symmetry tables of each point's original part."""
        self.x = MASK_SIZE - self.x
        old_i = self.i.long()
        if old_i.numel():
            u_loc = (self.u * 255).long().clamp(0, 255)
            v_loc = (self.v * 255).long().clamp(0, 255)
            tables = transform_data.uv_symmetries
            self.u = tables["U_transforms"][old_i - 1, v_loc, u_loc].to(self.u)
            self.v = tables["V_transforms"][old_i - 1, v_loc, u_loc].to(self.v)
            self.i = transform_data.point_label_symmetries.to(old_i.device)[old_i].to(self.i)
        segm = torch.flip(self.segm, [1])
        self.segm = transform_data.mask_label_symmetries.to(segm.device)[segm]


class DensePoseList:
    """Per-instance DensePose ground truth of one image (an :class:`Instances` field, ``gt_densepose``):
    a :class:`DensePoseDataRelative` or ``None`` (no DensePose annotation) per instance."""

    def __init__(self, items: Sequence[DensePoseDataRelative | None]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> DensePoseList | DensePoseDataRelative:
        """An int gives one item; a slice, a bool mask or indices give a :class:`DensePoseList`."""
        if isinstance(item, int):
            return self.items[item]
        if isinstance(item, slice):
            return DensePoseList(self.items[item])
        idx = torch.as_tensor(item)
        if idx.dtype == torch.bool:
            if idx.numel() != len(self.items):
                raise IndexError(f"DensePoseList: bool mask of length {idx.numel()} for {len(self.items)} items.")
            idx = idx.nonzero().squeeze(1)
        return DensePoseList([self.items[int(k)] for k in idx.reshape(-1).tolist()])

    def to(self, device: torch.device | str) -> DensePoseList:
        return DensePoseList([None if d is None else d.to(device) for d in self.items])

    @staticmethod
    def cat(lists: Sequence[DensePoseList]) -> DensePoseList:
        return DensePoseList([d for lst in lists for d in lst.items])
