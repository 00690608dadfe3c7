"""Optimizer parameter groups with per-parameter hyper-parameters (no weight decay on norm layers, bias lr
factor, layer-wise lr decay, overrides by parameter name).

Configs pass the groups to a torch optimizer::

    optimizer = L(torch.optim.SGD)(
        params=L(get_default_optimizer_params)(weight_decay_norm=0.0), lr=0.02, momentum=0.9, weight_decay=1e-4)

(the trainer config fills ``params.model``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["get_default_optimizer_params", "reduce_param_groups"]


def _norm_module_types() -> tuple[type, ...]:
    from libdet.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
    from libdet.layers.batch_norm import LayerNorm as LibdetLayerNorm

    return (
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.SyncBatchNorm,
        nn.GroupNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
        nn.LayerNorm,
        nn.LocalResponseNorm,
        FrozenBatchNorm2d,
        NaiveSyncBatchNorm,
        LibdetLayerNorm,
    )


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
    lr_factor_func: Callable[[str], float] | None = None,
    overrides: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups of ``model`` for a ``torch.optim`` optimizer.

    Each trainable parameter (shared parameters counted once) gets hyper-parameters from, in increasing
    priority: the defaults (``base_lr``, ``weight_decay``; unset keys fall back to the optimizer's own
    defaults), ``weight_decay_norm`` for parameters of normalisation layers, ``bias_lr_factor`` /
    ``weight_decay_bias`` for parameters named ``bias``, ``lr_factor_func(full_name)`` (multiplies the lr), and
    ``overrides[name]`` where ``name`` is the parameter's short name (``"bias"``, ``"pos_embed"``) or full
    name (``"backbone.stem.conv1.weight"``; takes precedence). Parameters with equal hyper-parameters are
    merged into one group; groups appear in the order of their first parameter in ``model.named_modules()``.

    Args:
        model: the model.
        base_lr: lr of all groups (required with ``bias_lr_factor != 1`` or ``lr_factor_func``).
        weight_decay: weight decay of all groups.
        weight_decay_norm: weight decay of the parameters of norm layers (BatchNorm, SyncBatchNorm, GroupNorm,
            LayerNorm, InstanceNorm, libdet's FrozenBatchNorm2d / NaiveSyncBatchNorm / LayerNorm).
        bias_lr_factor: lr multiplier of biases.
        weight_decay_bias: weight decay of biases.
        lr_factor_func: ``full parameter name -> lr multiplier`` (e.g. layer-wise lr decay for ViT).
        overrides: ``{parameter name: {hyper-parameter: value}}``.

    Returns:
        A list of ``{"params": [...], **hyper-parameters}`` dicts.
    """
    overrides = copy.deepcopy(dict(overrides or {}))
    defaults: dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: dict[str, float] = {}
    if bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("get_default_optimizer_params: bias_lr_factor != 1.0 needs base_lr.")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError(
                "get_default_optimizer_params: give either overrides['bias'] or "
                "bias_lr_factor/weight_decay_bias, not both."
            )
        overrides["bias"] = bias_overrides
    if lr_factor_func is not None and base_lr is None:
        raise ValueError("get_default_optimizer_params: lr_factor_func needs base_lr.")

    norm_types = _norm_module_types()
    params: list[dict[str, Any]] = []
    memo: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or id(value) in memo:
                continue
            memo.add(id(value))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            hyperparams = dict(defaults)
            if isinstance(module, norm_types) and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            if lr_factor_func is not None:
                hyperparams["lr"] = hyperparams["lr"] * lr_factor_func(full_name)
            hyperparams.update(overrides.get(param_name, {}))
            hyperparams.update(overrides.get(full_name, {}))
            params.append({"params": [value], **hyperparams})
    return reduce_param_groups(params)


def reduce_param_groups(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge parameter groups with identical hyper-parameters (order: first appearance; parameters keep their
    order within a group)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for item in params:
        hyper = tuple(sorted((k, v) for k, v in item.items() if k != "params"))
        group = groups.get(hyper)
        if group is None:
            group = groups[hyper] = {"params": [], **dict(hyper)}
        group["params"].extend(item["params"])
    return list(groups.values())
