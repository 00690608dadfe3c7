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

import torch
from torch import nn

__all__ = [
    "GradientClipping",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "reduce_param_groups",
]


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


# detectron2's YAML-config builders (the config is translated by libdet.config.yaml_translate)


def build_optimizer(cfg: Any, model: nn.Module) -> Any:
    """detectron2's ``build_optimizer(cfg, model)``: SGD over :func:`get_default_optimizer_params` groups from
    ``SOLVER`` (``BASE_LR``, ``MOMENTUM``, ``NESTEROV``, ``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``,
    ``WEIGHT_DECAY_BIAS``), clipping gradients before each step when ``SOLVER.CLIP_GRADIENTS.ENABLED``.

    Args:
        cfg: a YAML config (``CfgNode``).
        model: the built model.
    """
    from libdet.config import instantiate
    from libdet.config.yaml_translate import optimizer_config

    node = optimizer_config(cfg)
    node["params"]["model"] = model
    optimizer = instantiate(node)
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED:
        _add_gradient_clipping(optimizer, GradientClipping(clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE))
    return optimizer


class GradientClipping:
    """detectron2's ``SOLVER.CLIP_GRADIENTS``: ``"value"`` clips each gradient element to ``[-clip_value,
    clip_value]``, ``"norm"`` each parameter's gradient to norm ``clip_value``, ``"full_model"`` the norm of all
    gradients together. Usable as a gradient transform of :class:`libdet.engine.optimizer_step.OptimizerStep`
    (``transform(optimizer) -> {}``).

    Args:
        clip_type: ``"value"``, ``"norm"`` or ``"full_model"``.
        clip_value: the bound.
        norm_type: the p of the L-p norm (``"norm"`` / ``"full_model"``).
    """

    def __init__(self, clip_type: str, clip_value: float, norm_type: float = 2.0) -> None:
        if clip_type not in ("value", "norm", "full_model"):
            raise ValueError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip_type!r}: expected 'value', 'norm' or 'full_model'."
            )
        self.clip_type = clip_type
        self.clip_value = float(clip_value)
        self.norm_type = float(norm_type)

    def clip(self, params: list[torch.Tensor]) -> None:
        """Clip the ``.grad`` of ``params`` in place."""
        params = [p for p in params if p.grad is not None]
        if self.clip_type == "value":
            torch.nn.utils.clip_grad_value_(params, self.clip_value)
        elif self.clip_type == "norm":
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, self.clip_value, self.norm_type)
        else:
            torch.nn.utils.clip_grad_norm_(params, self.clip_value, self.norm_type)

    def __call__(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        self.clip([p for group in optimizer.param_groups for p in group["params"]])
        return {}


def _add_gradient_clipping(optimizer: Any, clipping: GradientClipping) -> None:
    """Make ``optimizer.step()`` clip the gradients first (detectron2's ``maybe_add_gradient_clipping``)."""
    base = type(optimizer)

    def step(self: Any, closure: Any = None) -> Any:
        clipping(self)
        return base.step(self, closure)

    # a subclass of the optimizer's own class: isinstance checks and state_dict() stay the same
    optimizer.__class__ = type(f"{base.__name__}WithGradientClip", (base,), {"step": step})


def build_lr_scheduler(cfg: Any, optimizer: Any) -> Any:
    """detectron2's ``build_lr_scheduler(cfg, optimizer)``: an :class:`LRMultiplier` over ``SOLVER.MAX_ITER``
    iterations with the multiplier of ``SOLVER.LR_SCHEDULER_NAME`` (warmup included)."""
    from libdet.config import instantiate
    from libdet.config.yaml_translate import lr_multiplier_config

    from .lr_scheduler import LRMultiplier

    multiplier = instantiate(lr_multiplier_config(cfg))
    return LRMultiplier(optimizer, multiplier=multiplier, max_iter=cfg.SOLVER.MAX_ITER)
