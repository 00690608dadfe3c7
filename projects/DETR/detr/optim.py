"""DETR's optimizer parameter groups."""

from __future__ import annotations

from typing import Any

from torch import nn

from libdet.solver import get_default_optimizer_params

__all__ = ["detr_optimizer_params"]


def detr_optimizer_params(
    model: nn.Module, *, base_lr: float, weight_decay: float, backbone_lr_multiplier: float = 0.1
) -> list[dict[str, Any]]:
    """Parameter groups of a :class:`~detr.DETR`: the backbone at ``backbone_lr_multiplier * base_lr`` (the paper:
    1e-5 against 1e-4), everything else at ``base_lr``; ``weight_decay`` on every parameter (as the official
    training, norms included).

    ``model`` is filled in by the trainer (``optimizer.params.model``) in a lazy config.
    """

    def lr_factor(name: str) -> float:
        return backbone_lr_multiplier if name.startswith("backbone.") else 1.0

    return get_default_optimizer_params(model, base_lr=base_lr, weight_decay=weight_decay, lr_factor_func=lr_factor)
