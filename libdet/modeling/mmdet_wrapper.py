"""Wrappers that run mmdetection (2.x) backbones, necks and detectors inside libdet.

``MMDetBackbone`` turns an mmdet backbone (+ optional neck) into a libdet :class:`Backbone`;
``MMDetDetector`` gives an mmdet detector libdet's batched-input / ``Instances`` conventions. mmdet is an
optional extra: it is imported only when a config dict has to be built or masks converted.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from libdet.layers import ShapeSpec
from libdet.structures import BitMasks, Boxes, ImageList, Instances
from libdet.utils.events import get_event_storage, has_event_storage

from .backbone import Backbone

__all__ = ["MMDetBackbone", "MMDetDetector"]

logger = logging.getLogger(__name__)


def _import_mmdet_models(what: str):
    try:
        import mmdet.models
    except ImportError as e:
        raise ImportError(
            f"{what} was given as a config dict, which needs mmdetection 2.x to build it: install the `mmdet` "
            "package (with `mmcv-full`), or pass an already built nn.Module."
        ) from e
    return mmdet.models


def _to_container(cfg: Mapping) -> dict:
    """mmdet's builders check for plain ``dict``/``list``; turn OmegaConf / other mappings into them."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return {k: _to_container(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}


def _init_weights(module: nn.Module) -> None:
    """Run mmdet's own initialisation (mmdet modules are not initialised by their constructor)."""
    if isinstance(module, nn.Sequential):
        for m in module:
            _init_weights(m)
    elif callable(getattr(module, "init_weights", None)):
        module.init_weights()


class MMDetBackbone(Backbone):
    """An mmdet backbone, optionally followed by an mmdet neck, as a libdet :class:`Backbone`.

    mmdet backbones/necks return a tuple of feature maps; they are named ``output_names`` in order.
    """

    def __init__(
        self,
        backbone: nn.Module | Mapping,
        neck: nn.Module | Mapping | None = None,
        *,
        pretrained_backbone: str | None = None,
        output_shapes: list[ShapeSpec],
        output_names: list[str] | None = None,
    ):
        """
        Args:
            backbone: an mmdet-style backbone module (``Tensor[N, C, H, W] -> tuple of Tensors``), or an mmdet
                config dict built with ``mmdet.models.build_backbone``.
            neck: a module taking the backbone's tuple and returning a tuple, a config dict built with
                ``mmdet.models.build_neck``, or None.
            pretrained_backbone: checkpoint path handed to the backbone's ``init_weights(pretrained)`` (the
                mmdet < 2.12 interface; newer mmdet puts it in the config's ``init_cfg``). None: ``init_weights()``.
            output_shapes: channels and stride of each output, in the order of the returned tuple.
            output_names: names of the outputs; default ``out0, out1, ...`` (as detectron2).
        """
        super().__init__()
        if isinstance(backbone, Mapping):
            backbone = _import_mmdet_models("MMDetBackbone(backbone=...)").build_backbone(_to_container(backbone))
        if isinstance(neck, Mapping):
            neck = _import_mmdet_models("MMDetBackbone(neck=...)").build_neck(_to_container(neck))
        self.backbone = backbone
        self.neck = neck
        if pretrained_backbone is not None:
            logger.info(f"Initializing mmdet backbone weights from {pretrained_backbone} ...")
            self.backbone.init_weights(pretrained_backbone)
        else:
            _init_weights(self.backbone)
        # mmdet's train() does more than set the flag (e.g. re-freezes frozen stages), so call it explicitly.
        self.backbone.train()
        if self.neck is not None:
            _init_weights(self.neck)
            self.neck.train()

        if not output_names:
            output_names = [f"out{i}" for i in range(len(output_shapes))]
        if len(output_names) != len(output_shapes):
            raise ValueError(
                f"MMDetBackbone: got {len(output_names)} output_names {output_names} but "
                f"{len(output_shapes)} output_shapes; they must match one to one."
            )
        self._output_shapes = list(output_shapes)
        self._output_names = list(output_names)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: Tensor[N, C, H, W] image batch.

        Returns:
            ``{name: Tensor[N, C_i, H_i, W_i]}`` for each name in ``output_names``.
        """
        outs = self.backbone(x)
        if self.neck is not None:
            outs = self.neck(outs)
        if not isinstance(outs, (list, tuple)):
            raise TypeError(f"MMDetBackbone: the mmdet backbone/neck must return a list or tuple, got {type(outs)}.")
        if len(outs) != len(self._output_shapes):
            raise ValueError(
                f"MMDetBackbone: the backbone/neck returned {len(outs)} feature maps, but {len(self._output_shapes)} "
                f"output_shapes were given (output_names {self._output_names})."
            )
        return dict(zip(self._output_names, outs, strict=True))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(zip(self._output_names, self._output_shapes, strict=True))


class MMDetDetector(nn.Module):
    """An mmdet (2.x) detector with libdet's input and output conventions.

    Training returns a loss dict; inference returns ``[{"instances": Instances}]`` with ``pred_boxes``,
    ``scores``, ``pred_classes`` (and ``pred_masks`` for mask models) in the coordinates of the requested
    ``height`` x ``width`` (mmdet rescales its results with the ``scale_factor`` meta passed to it).
    """

    def __init__(
        self,
        detector: nn.Module | Mapping,
        *,
        size_divisibility: int = 32,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            detector: an mmdet detector (with ``forward_train`` and ``simple_test``), or its config dict, built
                with ``mmdet.models.build_detector``.
            size_divisibility: pad the batch height and width up to a multiple of this.
            pixel_mean, pixel_std: per-channel normalisation of the input images (C values each).
        """
        super().__init__()
        if isinstance(detector, Mapping):
            detector = _import_mmdet_models("MMDetDetector(detector=...)").build_detector(_to_container(detector))
        self.detector = detector
        _init_weights(self.detector)
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(
                f"MMDetDetector: pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length."
            )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict[str, Any]]):
        """
        Args:
            batched_inputs: list of dicts with ``"image"`` (Tensor[C, H, W]), optional ``"height"``/``"width"``
                (output size; all inputs or none) and, in training, ``"instances"`` (``gt_boxes``,
                ``gt_classes``, optional ``gt_masks`` as ``BitMasks`` or ``PolygonMasks``).

        Returns:
            training: dict of scalar losses. Inference: list of ``{"instances": Instances}``.
        """
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, size_divisibility=self.size_divisibility).tensor
        metas, output_shapes, rescale = self._img_metas(batched_inputs, tuple(images.shape[-2:]))

        if self.training:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            kwargs = {}
            if gt_instances[0].has("gt_masks"):
                kwargs["gt_masks"] = [_to_mmdet_masks(x.gt_masks, x.image_size) for x in gt_instances]
            losses_and_metrics = self.detector.forward_train(
                images,
                metas,
                [x.gt_boxes.tensor for x in gt_instances],
                [x.gt_classes for x in gt_instances],
                **kwargs,
            )
            return _parse_losses(losses_and_metrics)

        results = self.detector.simple_test(images, metas, rescale=rescale)
        return [
            {"instances": _convert_mmdet_result(r, shape, self.device)}
            for r, shape in zip(results, output_shapes, strict=True)
        ]

    @staticmethod
    def _img_metas(
        batched_inputs: list[dict[str, Any]], padded_hw: tuple[int, int]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int]], bool]:
        """mmdet's per-image ``img_metas``, the output size of each image, and whether mmdet must rescale."""
        has_size = {"height" in x for x in batched_inputs}
        if len(has_size) != 1:
            raise ValueError(
                "MMDetDetector: some inputs have 'height'/'width' and some do not; give them for all or none."
            )
        rescale = has_size.pop()
        metas, output_shapes = [], []
        for x in batched_inputs:
            c, h, w = x["image"].shape
            meta = {"img_shape": (h, w, c), "pad_shape": (*padded_hw, c), "flip": False}
            if rescale:
                # mmdet divides its boxes by scale_factor (w, h, w, h) to reach ori_shape coordinates.
                out_h, out_w = int(x["height"]), int(x["width"])
                meta["scale_factor"] = np.array([w / out_w, h / out_h] * 2, dtype=np.float32)
                meta["ori_shape"] = (out_h, out_w, c)
                output_shapes.append((out_h, out_w))
            else:
                meta["scale_factor"] = 1.0
                meta["ori_shape"] = (h, w, c)
                output_shapes.append((h, w))
            metas.append(meta)
        return metas, output_shapes, rescale


def _to_mmdet_masks(masks, image_size: tuple[int, int]):
    """libdet ``BitMasks``/``PolygonMasks`` -> mmdet's ``BitmapMasks``/``PolygonMasks`` of the input image size."""
    from mmdet.core import BitmapMasks as MMBitmapMasks
    from mmdet.core import PolygonMasks as MMPolygonMasks

    height, width = image_size
    if isinstance(masks, BitMasks):
        return MMBitmapMasks(masks.tensor.cpu().numpy(), height, width)
    return MMPolygonMasks(masks.polygons, height, width)


def _parse_losses(losses: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Reduce mmdet's loss dict: lists of per-level losses are summed, entries named ``*loss*`` are returned
    (they are what gets optimised), the rest (e.g. accuracies) goes to the event storage as scalars."""
    log_vars = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            log_vars[name] = value.mean()
        elif isinstance(value, list):
            log_vars[name] = sum(v.mean() for v in value)
        else:
            raise TypeError(f"MMDetDetector: mmdet loss {name!r} is a {type(value)}, expected a Tensor or a list.")
    ret = {}
    for name, value in log_vars.items():
        if "loss" in name:
            ret[name] = value
        elif has_event_storage():
            get_event_storage().put_scalar(name, float(value))
    return ret


def _convert_mmdet_result(result, shape: tuple[int, int], device: torch.device) -> Instances:
    """mmdet 2.x ``simple_test`` result of one image -> ``Instances`` of ``image_size == shape``.

    ``result`` is ``bbox_result`` or ``(bbox_result, segm_result)``: ``bbox_result[k]`` is an ``(n_k, 5)``
    array ``[x1, y1, x2, y2, score]`` of class ``k``; ``segm_result[k]`` is a list of ``n_k`` (H, W) masks
    (or a ``(masks, mask_scores)`` pair).
    """
    if isinstance(result, tuple):
        bbox_result, segm_result = result
        if isinstance(segm_result, tuple):
            segm_result = segm_result[0]
    else:
        bbox_result, segm_result = result, None

    dets = torch.from_numpy(np.vstack(bbox_result)).to(device=device, dtype=torch.float32).reshape(-1, 5)
    labels = torch.cat([torch.full((len(b),), k, dtype=torch.int64, device=device) for k, b in enumerate(bbox_result)])
    inst = Instances(shape)
    inst.pred_boxes = Boxes(dets[:, :4])
    inst.scores = dets[:, 4]
    inst.pred_classes = labels
    if segm_result is not None:
        masks = [torch.as_tensor(m, device=device) for m in itertools.chain.from_iterable(segm_result)]
        inst.pred_masks = (
            torch.stack(masks).bool() if masks else torch.zeros((0, *shape), dtype=torch.bool, device=device)
        )
    return inst
