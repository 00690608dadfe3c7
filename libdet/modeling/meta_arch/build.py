"""``META_ARCH_REGISTRY``, ``SEM_SEG_HEADS_REGISTRY``, ``build_model(cfg)`` and ``build_sem_seg_head(cfg, ...)`` of
detectron2's YAML config layer: the YAML config is translated into the lazy config (:mod:`libdet.config.yaml_model`)
and instantiated, so both config systems build the same modules.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from libdet.modeling.registries import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

from .panoptic_fpn import PanopticFPN
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet
from .semantic_seg import SemanticSegmentor, SemSegFPNHead

__all__ = ["META_ARCH_REGISTRY", "SEM_SEG_HEADS_REGISTRY", "build_model", "build_sem_seg_head"]

BUILTIN_META_ARCHS = {
    cls.__name__: cls for cls in (GeneralizedRCNN, ProposalNetwork, RetinaNet, SemanticSegmentor, PanopticFPN)
}
BUILTIN_SEM_SEG_HEADS = {"SemSegFPNHead": SemSegFPNHead}
for _cls in BUILTIN_META_ARCHS.values():
    META_ARCH_REGISTRY.register(_cls)
SEM_SEG_HEADS_REGISTRY.register(SemSegFPNHead)


def build_model(cfg: Any) -> nn.Module:
    """The model of YAML config ``cfg`` (``MODEL.META_ARCHITECTURE``), on ``MODEL.DEVICE``, randomly
    initialised (load weights with ``DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)``)."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import model_config
    from libdet.config.yaml_translate import yaml_device

    model = instantiate(model_config(cfg))
    model.to(yaml_device(cfg))
    logging.getLogger(__name__).debug(f"Built model {type(model).__name__} from the YAML config.")
    return model


def build_sem_seg_head(cfg: Any, input_shape: Any) -> nn.Module:
    """The semantic segmentation head of ``MODEL.SEM_SEG_HEAD.NAME`` for features ``{name: ShapeSpec}``."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import sem_seg_head_config

    return instantiate(sem_seg_head_config(cfg, dict(input_shape)))
