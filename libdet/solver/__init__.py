"""Optimizer parameter groups and learning-rate schedules (``detectron2.solver`` compatible).

Optimizers are plain ``torch.optim`` classes instantiated by the config; ``build_optimizer`` /
``build_lr_scheduler`` (yacs-config builders) do not exist in libdet.
"""

from . import build, lr_scheduler
from .build import get_default_optimizer_params, reduce_param_groups
from .lr_scheduler import LRMultiplier, LRScheduler, WarmupCosineLR, WarmupMultiStepLR, WarmupParamScheduler

__all__ = [
    "LRMultiplier",
    "LRScheduler",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
    "get_default_optimizer_params",
    "reduce_param_groups",
]
