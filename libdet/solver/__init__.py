"""Optimizer parameter groups and learning-rate schedules (``detectron2.solver`` compatible).

Optimizers are plain ``torch.optim`` classes instantiated by the config; detectron2's YAML-config builders
``build_optimizer(cfg, model)`` / ``build_lr_scheduler(cfg, optimizer)`` translate the config into the same.
"""

from . import build, lr_scheduler
from .build import build_lr_scheduler, build_optimizer, get_default_optimizer_params, reduce_param_groups
from .lr_scheduler import LRMultiplier, LRScheduler, WarmupCosineLR, WarmupMultiStepLR, WarmupParamScheduler

__all__ = [
    "LRMultiplier",
    "LRScheduler",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "reduce_param_groups",
]
