"""Helpers shared by dataset mappers: image reading, annotation transforms, ``Instances`` construction.

Annotations are detectron2's "standard dataset dicts" (``bbox``, ``bbox_mode``, ``category_id``,
``segmentation`` as polygons or RLE, ``keypoints`` as flat ``[x, y, v] * K``, ``iscrowd``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from libdet.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    Keypoints,
    PolygonMasks,
    RotatedBoxes,
    polygons_to_bitmask,
)
from libdet.utils.file_io import PathManager

from . import transforms as T
from .catalog import Metadata, MetadataCatalog
from .errors import ImageNotFoundError, ImageReadError, SizeMismatchError

__all__ = [
    "SizeMismatchError",
    "annotations_to_instances",
    "annotations_to_instances_rotated",
    "build_augmentation",
    "build_transform_gen",
    "check_image_size",
    "check_metadata_consistency",
    "convert_PIL_to_numpy",
    "convert_image_to_rgb",
    "create_keypoint_hflip_indices",
    "filter_empty_instances",
    "gen_crop_transform_with_instance",
    "get_bbox",
    "fed_loss_cls_weights_fn",
    "get_fed_loss_cls_weights",
    "read_image",
    "transform_instance_annotations",
    "transform_keypoint_annotations",
    "transform_proposals",
]

logger = logging.getLogger(__name__)


# ITU-R BT.601 (https://en.wikipedia.org/wiki/YUV#SDTV_with_BT.601)
_M_RGB2YUV = [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
_M_YUV2RGB = [[1.0, 0.0, 1.13983], [1.0, -0.39465, -0.58060], [1.0, 2.03211, 0.0]]


def convert_PIL_to_numpy(image: Image.Image, format: str | None) -> np.ndarray:
    """Convert a PIL image to an ``HxWxC`` (``HxW`` for modes without channels and ``format=None``) array.

    Args:
        image: the PIL image.
        format: ``None`` (keep the PIL mode), a PIL mode such as ``"RGB"`` or ``"L"`` (``"L"`` gives
            ``HxWx1``), ``"BGR"``, or ``"YUV-BT.601"`` (float, Y in [0, 1], U/V around 0).
    """
    if format is not None:
        conformed = "RGB" if format in ("BGR", "YUV-BT.601") else format
        if image.mode != conformed:  # convert() to the same mode would only copy the image
            image = image.convert(conformed)
    array = np.asarray(image)
    if format == "L":
        array = np.expand_dims(array, -1)
    elif format == "BGR":
        array = array[:, :, ::-1]
    elif format == "YUV-BT.601":
        array = np.dot(array / 255.0, np.array(_M_RGB2YUV).T)
    return array


def convert_image_to_rgb(image: np.ndarray | torch.Tensor, format: str) -> np.ndarray:
    """Convert an ``HxWxC`` image in ``format`` (as produced by :func:`read_image`) to uint8 RGB."""
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if format == "BGR":
        image = image[:, :, [2, 1, 0]]
    elif format == "YUV-BT.601":
        image = np.dot(image, np.array(_M_YUV2RGB).T) * 255.0
        image = np.clip(image, 0, 255)
    else:
        if format == "L":
            image = image[:, :, 0]
        image = image.astype(np.uint8)
        image = np.asarray(Image.fromarray(image, mode=format).convert("RGB"))
    return image.astype(np.uint8) if image.dtype != np.uint8 else image


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """Read an image (any ``PathManager`` path) into a numpy array, applying its EXIF orientation.

    Args:
        file_name: image path or URI.
        format: see :func:`convert_PIL_to_numpy`.

    Returns:
        ``HxWxC`` array (uint8, or float for ``"YUV-BT.601"``); ``HxW`` for 1-channel images with
        ``format=None``.

    Raises:
        ImageNotFoundError: (a ``FileNotFoundError``) if the file does not exist.
        ImageReadError: (an ``OSError``) if the file cannot be decoded as an image.
    """
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now, inside the with-block, so a truncated file fails here
        image = ImageOps.exif_transpose(image)  # a corrupt EXIF block fails here
    except FileNotFoundError as e:
        raise ImageNotFoundError(f"read_image: image file '{file_name}' does not exist.") from e
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"read_image: cannot decode image file '{file_name}': {type(e).__name__}: {e}") from e
    return convert_PIL_to_numpy(image, format)


def check_image_size(dataset_dict: dict[str, Any], image: np.ndarray) -> None:
    """Check the image's size against ``dataset_dict["width"/"height"]``; fill them in when absent.

    Raises:
        SizeMismatchError: naming the file and both sizes.
    """
    image_wh = (image.shape[1], image.shape[0])
    if "width" in dataset_dict or "height" in dataset_dict:
        expected_wh = (dataset_dict.get("width", image_wh[0]), dataset_dict.get("height", image_wh[1]))
        if tuple(expected_wh) != image_wh:
            raise SizeMismatchError(
                f"Image '{dataset_dict.get('file_name', '<no file_name>')}' (image_id="
                f"{dataset_dict.get('image_id', '?')}) has size (w, h)={image_wh}, but its dataset dict says "
                f"(w, h)={tuple(expected_wh)}. Check the annotations, or whether the image has an EXIF "
                "orientation that the annotations did not account for."
            )
    dataset_dict.setdefault("width", image_wh[0])
    dataset_dict.setdefault("height", image_wh[1])


def transform_proposals(
    dataset_dict: dict[str, Any],
    image_shape: tuple[int, int],
    transforms: T.TransformList,
    *,
    proposal_topk: int,
    min_box_size: float = 0,
) -> None:
    """Turn ``proposal_boxes``/``proposal_objectness_logits`` of a dict into ``dataset_dict["proposals"]``.

    The boxes are transformed, clipped to ``image_shape``, filtered by ``min_box_size`` and the top
    ``proposal_topk`` kept (the stored proposals are assumed sorted by score).
    """
    if "proposal_boxes" not in dataset_dict:
        return
    boxes = transforms.apply_box(
        BoxMode.convert(dataset_dict.pop("proposal_boxes"), dataset_dict.pop("proposal_bbox_mode"), BoxMode.XYXY_ABS)
    )
    boxes = Boxes(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    objectness_logits = torch.as_tensor(dataset_dict.pop("proposal_objectness_logits").astype("float32"))
    boxes.clip(image_shape)
    keep = boxes.nonempty(threshold=min_box_size)
    boxes = boxes[keep]
    objectness_logits = objectness_logits[keep]
    proposals = Instances(image_shape)
    proposals.proposal_boxes = boxes[:proposal_topk]
    proposals.objectness_logits = objectness_logits[:proposal_topk]
    dataset_dict["proposals"] = proposals


def get_bbox(annotation: dict[str, Any]) -> np.ndarray:
    """The annotation's box as XYXY_ABS ``(4,)`` array."""
    return np.asarray(BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS))


def _as_transform_list(transforms: T.Transform | Sequence[T.Transform]) -> T.TransformList:
    if isinstance(transforms, (tuple, list)):
        return T.TransformList(list(transforms))
    if isinstance(transforms, T.TransformList):
        return transforms
    return T.TransformList([transforms])


def transform_instance_annotations(
    annotation: dict[str, Any],
    transforms: T.Transform | Sequence[T.Transform],
    image_size: tuple[int, int],
    *,
    keypoint_hflip_indices: np.ndarray | None = None,
) -> dict[str, Any]:
    """Apply ``transforms`` to one instance annotation (modified in place and returned).

    The box becomes XYXY_ABS clipped to the image; XYWHA_ABS (rotated) boxes stay rotated. Polygons stay
    polygons, RLE becomes a ``(H, W)`` uint8 mask; keypoints are transformed, flipped with
    ``keypoint_hflip_indices`` and marked invisible (``v = 0``) outside the image.

    Args:
        annotation: one instance dict.
        transforms: the transforms applied to the image.
        image_size: ``(h, w)`` of the transformed image.
        keypoint_hflip_indices: ``(K,)`` flip permutation, see :func:`create_keypoint_hflip_indices`.
    """
    transforms = _as_transform_list(transforms)
    if annotation["bbox_mode"] == BoxMode.XYWHA_ABS:
        rbox = transforms.apply_rotated_box(np.asarray([annotation["bbox"]], dtype=np.float64))[0]
        annotation["bbox"] = rbox
    else:
        bbox = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
        bbox = transforms.apply_box(np.array([bbox]))[0].clip(min=0)
        annotation["bbox"] = np.minimum(bbox, list(image_size + image_size)[::-1])
        annotation["bbox_mode"] = BoxMode.XYXY_ABS

    if "segmentation" in annotation:
        segm = annotation["segmentation"]
        if isinstance(segm, list):
            polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
            annotation["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        elif isinstance(segm, dict):
            from libdet.structures.masks import rle_to_bitmask

            mask = transforms.apply_segmentation(rle_to_bitmask(segm).astype(np.uint8))
            if tuple(mask.shape[:2]) != tuple(image_size):
                raise ValueError(
                    f"transform_instance_annotations: the transformed RLE mask has shape {mask.shape[:2]} but the "
                    f"image is {tuple(image_size)}; is the RLE 'size' correct for this image?"
                )
            annotation["segmentation"] = mask
        elif isinstance(segm, np.ndarray):
            annotation["segmentation"] = transforms.apply_segmentation(segm.astype(np.uint8))
        else:
            raise TypeError(
                f"Cannot transform segmentation of type {type(segm)}: expected a list of polygons, a COCO RLE dict "
                "or a 2D numpy mask."
            )

    if "keypoints" in annotation:
        annotation["keypoints"] = transform_keypoint_annotations(
            annotation["keypoints"], transforms, image_size, keypoint_hflip_indices
        )
    return annotation


def _transform_plain_annotations(
    annotations: list[dict[str, Any]], transforms: T.TransformList, image_size: tuple[int, int]
) -> bool:
    """:func:`transform_instance_annotations` of all ``annotations`` at once, when they are plain (XYXY/XYWH_ABS
    boxes of Python numbers, polygon or no segmentation, no keypoints) and every transform maps polygons point
    by point: one ``apply_box`` and one ``apply_coords`` per image instead of per annotation and polygon.

    Gives the same values as the per-annotation function, whose list boxes go through ``BoxMode.convert``
    (a float32 tensor for XYWH boxes: the rounding is kept). Returns False, changing nothing, otherwise.
    """
    plain_modes = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    if not annotations or torch.get_default_dtype() != torch.float32:
        return False
    for t in transforms.transforms:
        if isinstance(t, T.TransformList) or type(t).apply_polygons is not T.Transform.apply_polygons:
            return False
    for anno in annotations:
        box, segm = anno["bbox"], anno.get("segmentation", [])
        if anno["bbox_mode"] not in plain_modes or "keypoints" in anno or not isinstance(segm, list):
            return False
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            return False
        if not all(type(v) in (int, float) and abs(v) < 2**24 for v in box):  # exact in float32
            return False
    boxes = np.empty((len(annotations), 4), dtype=np.float64)
    for i, anno in enumerate(annotations):
        if anno["bbox_mode"] == BoxMode.XYWH_ABS:  # as BoxMode.convert: x1 = x0 + w in float32
            xywh = np.array(anno["bbox"], dtype=np.float32)
            xywh[2:] += xywh[:2]
            boxes[i] = xywh
        else:
            boxes[i] = anno["bbox"]
    boxes = np.minimum(transforms.apply_box(boxes).clip(min=0), list(image_size + image_size)[::-1])

    polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for a in annotations for p in a.get("segmentation", [])]
    if polygons:
        points = transforms.apply_coords(np.concatenate(polygons))
        ends = np.cumsum([len(p) for p in polygons])
        polygons = [p.reshape(-1) for p in np.split(points, ends[:-1])]
    start = 0
    for anno, box in zip(annotations, boxes):
        anno["bbox"], anno["bbox_mode"] = box, BoxMode.XYXY_ABS
        if "segmentation" in anno:
            count = len(anno["segmentation"])
            anno["segmentation"] = polygons[start : start + count]
            start += count
    return True


def transform_keypoint_annotations(
    keypoints: Sequence[float],
    transforms: T.Transform | Sequence[T.Transform],
    image_size: tuple[int, int],
    keypoint_hflip_indices: np.ndarray | None = None,
) -> np.ndarray:
    """Transform flat ``[x, y, v] * K`` keypoints; returns a ``(K, 3)`` float64 array.

    Keypoints that land outside ``[0, w] x [0, h]`` get ``v = 0`` (and so do their coordinates). After an odd
    number of horizontal flips the keypoints are permuted by ``keypoint_hflip_indices`` (left <-> right).
    """
    transforms = _as_transform_list(transforms)
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    keypoints_xy = transforms.apply_coords(keypoints[:, :2].copy())
    inside = ((keypoints_xy >= np.array([0, 0])) & (keypoints_xy <= np.array(image_size[::-1]))).all(axis=1)
    keypoints[:, :2] = keypoints_xy
    keypoints[:, 2][~inside] = 0

    num_hflips = sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms)
    if num_hflips % 2 == 1:
        if keypoint_hflip_indices is None:
            raise ValueError(
                "transform_keypoint_annotations: the transforms flip the image horizontally, which needs "
                "`keypoint_hflip_indices` (see create_keypoint_hflip_indices) to swap left/right keypoints."
            )
        if len(keypoints) != len(keypoint_hflip_indices):
            raise ValueError(
                f"transform_keypoint_annotations: {len(keypoints)} keypoints but keypoint_hflip_indices has "
                f"{len(keypoint_hflip_indices)} entries."
            )
        keypoints = keypoints[np.asarray(keypoint_hflip_indices, dtype=np.int64), :]
    keypoints[keypoints[:, 2] == 0] = 0
    return keypoints


def annotations_to_instances(
    annos: list[dict[str, Any]], image_size: tuple[int, int], mask_format: str = "polygon"
) -> Instances:
    """Build the ground-truth :class:`Instances` of one image from its (transformed) annotations.

    Fields: ``gt_boxes`` (:class:`Boxes`, clipped to the image), ``gt_classes`` (int64), and when present
    ``gt_masks`` (:class:`PolygonMasks` or :class:`BitMasks`) and ``gt_keypoints`` (:class:`Keypoints`).

    Args:
        annos: instance annotations of one image.
        image_size: ``(h, w)``.
        mask_format: ``"polygon"`` or ``"bitmask"``.
    """
    if mask_format not in ("polygon", "bitmask"):
        raise ValueError(f"annotations_to_instances: mask_format must be 'polygon' or 'bitmask', got {mask_format!r}.")
    boxes = (
        np.stack([BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS) for obj in annos])
        if len(annos)
        else np.zeros((0, 4))
    )
    target = Instances(image_size)
    gt_boxes = Boxes(torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    gt_boxes.clip(image_size)
    target.gt_boxes = gt_boxes
    target.gt_classes = torch.tensor([int(obj["category_id"]) for obj in annos], dtype=torch.int64)

    if len(annos) and "segmentation" in annos[0]:
        segms = [obj["segmentation"] for obj in annos]
        if mask_format == "polygon":
            bad = [i for i, s in enumerate(segms) if not isinstance(s, list)]
            if bad:
                raise ValueError(
                    f"annotations_to_instances: mask_format='polygon' but annotation {bad[0]} has a "
                    f"segmentation of type {type(segms[bad[0]]).__name__} (RLE or mask); use mask_format='bitmask'."
                )
            masks = PolygonMasks(segms)
        else:
            h, w = image_size
            bitmasks = []
            for i, segm in enumerate(segms):
                if isinstance(segm, list):
                    bitmasks.append(polygons_to_bitmask(segm, h, w))
                elif isinstance(segm, dict):
                    from libdet.structures.masks import rle_to_bitmask

                    bitmasks.append(rle_to_bitmask(segm))
                elif isinstance(segm, np.ndarray):
                    if segm.ndim != 2:
                        raise ValueError(
                            f"annotations_to_instances: segmentation mask {i} must be 2D, got shape {segm.shape}."
                        )
                    bitmasks.append(segm)
                else:
                    raise TypeError(
                        f"annotations_to_instances: segmentation {i} has type {type(segm)}; expected polygons "
                        "(list), COCO RLE (dict) or a 2D numpy mask."
                    )
            masks = BitMasks(torch.stack([torch.from_numpy(np.ascontiguousarray(m)).to(torch.bool) for m in bitmasks]))
        target.gt_masks = masks

    if len(annos) and "keypoints" in annos[0]:
        kpts = [np.asarray(obj.get("keypoints", []), dtype=np.float32).reshape(-1, 3) for obj in annos]
        target.gt_keypoints = Keypoints(torch.as_tensor(np.stack(kpts)))
    return target


def annotations_to_instances_rotated(annos: list[dict[str, Any]], image_size: tuple[int, int]) -> Instances:
    """Like :func:`annotations_to_instances` for rotated boxes (``bbox`` in XYWHA_ABS): ``gt_boxes`` is a
    :class:`RotatedBoxes` clipped to the image, plus ``gt_classes``."""
    boxes = [obj["bbox"] for obj in annos]
    target = Instances(image_size)
    gt_boxes = RotatedBoxes(torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 5)))
    gt_boxes.clip(image_size)
    target.gt_boxes = gt_boxes
    target.gt_classes = torch.tensor([int(obj["category_id"]) for obj in annos], dtype=torch.int64)
    return target


def filter_empty_instances(
    instances: Instances,
    by_box: bool = True,
    by_mask: bool = True,
    box_threshold: float = 1e-5,
    return_mask: bool = False,
) -> Instances | tuple[Instances, torch.Tensor]:
    """Drop instances whose box is empty (side <= ``box_threshold``) or whose mask is empty.

    Returns:
        The kept instances, and with ``return_mask`` also the ``(N,)`` bool keep mask.
    """
    if not (by_box or by_mask):
        raise ValueError("filter_empty_instances: at least one of by_box / by_mask must be True.")
    r = []
    if by_box:
        r.append(instances.gt_boxes.nonempty(threshold=box_threshold))
    if instances.has("gt_masks") and by_mask:
        r.append(instances.gt_masks.nonempty())
    m = r[0]
    for x in r[1:]:
        m = m & x
    if return_mask:
        return instances[m], m
    return instances[m]


def check_metadata_consistency(key: str, dataset_names: Sequence[str]) -> None:
    """Check that ``MetadataCatalog.get(name).<key>`` is the same for all ``dataset_names``.

    Raises:
        ValueError: naming the key and the two datasets that differ.
    """
    if len(dataset_names) == 0:
        return
    entries = [MetadataCatalog.get(d).get(key) for d in dataset_names]
    for idx, entry in enumerate(entries):
        if entry != entries[0]:
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, dataset_names[idx], entry)
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, dataset_names[0], entries[0])
            raise ValueError(
                f"Datasets '{dataset_names[0]}' and '{dataset_names[idx]}' have different metadata '{key}': "
                f"{entries[0]!r} vs {entry!r}."
            )


def create_keypoint_hflip_indices(dataset_names: str | Sequence[str] | Metadata) -> np.ndarray:
    """The ``(K,)`` int permutation that maps each keypoint to its left/right mirror after a horizontal flip.

    Args:
        dataset_names: dataset name(s) whose metadata has ``keypoint_names`` and ``keypoint_flip_map`` (pairs of
            names), or such a metadata object.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    if isinstance(dataset_names, (list, tuple)):
        check_metadata_consistency("keypoint_names", dataset_names)
        check_metadata_consistency("keypoint_flip_map", dataset_names)
        meta = MetadataCatalog.get(dataset_names[0])
        where = f"dataset '{dataset_names[0]}'"
    else:
        meta = dataset_names
        where = "the given metadata"
    names = meta.get("keypoint_names")
    flip_pairs = meta.get("keypoint_flip_map")
    if names is None or flip_pairs is None:
        raise ValueError(f"create_keypoint_hflip_indices: {where} has no 'keypoint_names' / 'keypoint_flip_map'.")
    flip_map = dict(flip_pairs)
    flip_map.update({v: k for k, v in flip_map.items()})
    unknown = [k for k in flip_map if k not in names]
    if unknown:
        raise ValueError(
            f"create_keypoint_hflip_indices: keypoint_flip_map of {where} names unknown keypoints {unknown}."
        )
    flipped_names = [flip_map.get(n, n) for n in names]
    return np.asarray([list(names).index(n) for n in flipped_names], dtype=np.int32)


def get_fed_loss_cls_weights(
    dataset_names: str | Sequence[str] | list[dict[str, Any]],
    freq_weight_power: float = 1.0,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Per-class sampling weights for federated loss: (number of images containing the class) ** power.

    Args:
        dataset_names: registered dataset name(s), or the dataset dicts themselves. For names whose metadata
            has ``class_image_count`` (LVIS: ``[{"id": 1-based id, "image_count": n}, ...]``) that is used;
            otherwise the counts are computed from the dataset dicts (``category_id`` is the contiguous id).
        freq_weight_power: exponent applied to the counts.
        num_classes: number of classes; default from metadata ``thing_classes`` or the largest id + 1.

    Returns:
        ``(num_classes,)`` float32 tensor.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    if len(dataset_names) and all(isinstance(d, str) for d in dataset_names):
        check_metadata_consistency("class_image_count", dataset_names)
        meta = MetadataCatalog.get(dataset_names[0])
        class_freq_meta = meta.get("class_image_count")
        if class_freq_meta is not None:
            counts = [c["image_count"] for c in sorted(class_freq_meta, key=lambda x: x["id"])]
            return torch.tensor(counts, dtype=torch.float32) ** freq_weight_power
        if num_classes is None and meta.get("thing_classes") is not None:
            num_classes = len(meta.thing_classes)
        from .catalog import DatasetCatalog

        dicts = [d for name in dataset_names for d in DatasetCatalog.get(name)]
    else:
        dicts = list(dataset_names)
    per_image = [{int(a["category_id"]) for a in d.get("annotations", []) if not a.get("iscrowd", 0)} for d in dicts]
    max_id = max((max(s) for s in per_image if s), default=-1)
    if num_classes is None:
        num_classes = max_id + 1
    elif max_id >= num_classes:
        raise ValueError(f"get_fed_loss_cls_weights: category_id {max_id} >= num_classes={num_classes}.")
    counts = np.zeros(num_classes, dtype=np.float64)
    for s in per_image:
        for c in s:
            counts[c] += 1
    return torch.as_tensor(counts, dtype=torch.float32) ** freq_weight_power


def fed_loss_cls_weights_fn(
    dataset_names: str | Sequence[str], freq_weight_power: float = 0.5
) -> Callable[[], torch.Tensor]:
    """A function of no arguments returning :func:`get_fed_loss_cls_weights` ``(dataset_names,
    freq_weight_power)``, for ``FastRCNNOutputLayers(get_fed_loss_cls_weights=...)`` in a lazy config: building it
    reads no data, so a config can name it whether or not the federated loss is switched on, and the class
    frequencies are only computed when a predictor with ``use_fed_loss=True`` is built."""
    return functools.partial(get_fed_loss_cls_weights, dataset_names, freq_weight_power)


def gen_crop_transform_with_instance(
    crop_size: tuple[int, int], image_size: tuple[int, int], instance: dict[str, Any]
) -> T.CropTransform:
    """A random ``crop_size = (h, w)`` crop of an ``image_size`` image that contains the centre of
    ``instance``'s box (randomness from ``np.random``)."""
    crop_size = np.asarray(crop_size, dtype=np.int32)
    bbox = BoxMode.convert(instance["bbox"], instance["bbox_mode"], BoxMode.XYXY_ABS)
    center_yx = (bbox[1] + bbox[3]) * 0.5, (bbox[0] + bbox[2]) * 0.5
    if not (image_size[0] >= center_yx[0] and image_size[1] >= center_yx[1]):
        raise ValueError(
            f"gen_crop_transform_with_instance: the instance centre {center_yx} is outside the image "
            f"{tuple(image_size)}."
        )
    if not (image_size[0] >= crop_size[0] and image_size[1] >= crop_size[1]):
        raise ValueError(
            f"gen_crop_transform_with_instance: crop {tuple(crop_size)} exceeds the image {tuple(image_size)}."
        )
    min_yx = np.maximum(np.floor(center_yx).astype(np.int32) - crop_size, 0)
    max_yx = np.maximum(np.asarray(image_size, dtype=np.int32) - crop_size, 0)
    max_yx = np.minimum(max_yx, np.ceil(center_yx).astype(np.int32))
    y0 = int(np.random.randint(min_yx[0], max_yx[0] + 1))
    x0 = int(np.random.randint(min_yx[1], max_yx[1] + 1))
    return T.CropTransform(x0, y0, int(crop_size[1]), int(crop_size[0]))


def build_augmentation(
    *,
    is_train: bool,
    min_size: int | Sequence[int] | None = None,
    max_size: int = 1333,
    sample_style: str = "choice",
    random_flip: str = "horizontal",
) -> list[T.Augmentation]:
    """The default augmentations: ``ResizeShortestEdge`` and, in training, a ``RandomFlip``.

    Args:
        is_train: training (random size, flip) or test (fixed size, no flip).
        min_size: shortest-edge length(s); default ``(800,)`` for training and ``800`` for test. With
            ``sample_style="range"`` a ``(min, max)`` pair.
        max_size: cap on the longer side.
        sample_style: ``"choice"`` or ``"range"`` (training only; test always uses one size).
        random_flip: ``"horizontal"``, ``"vertical"`` or ``"none"`` (training only).
    """
    if min_size is None:
        min_size = (800,) if is_train else 800
    if is_train:
        if sample_style == "range" and (isinstance(min_size, int) or len(min_size) != 2):
            raise ValueError(f"build_augmentation: sample_style='range' needs min_size=(min, max), got {min_size}.")
        augmentation: list[T.Augmentation] = [T.ResizeShortestEdge(min_size, max_size, sample_style)]
        if random_flip not in ("horizontal", "vertical", "none"):
            raise ValueError(
                f"build_augmentation: random_flip must be 'horizontal', 'vertical' or 'none', got {random_flip!r}."
            )
        if random_flip != "none":
            augmentation.append(
                T.RandomFlip(horizontal=random_flip == "horizontal", vertical=random_flip == "vertical")
            )
        return augmentation
    return [T.ResizeShortestEdge(min_size, max_size, "choice")]


build_transform_gen = build_augmentation
"""Alias of :func:`build_augmentation` (detectron2's older name)."""
