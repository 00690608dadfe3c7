"""Lazy-config nodes for the YAML translator, as plain dicts.

``L(target)(**kwargs)`` is ``{"_target_": target, **kwargs}``: what ``LazyCall`` describes, without wrapping every
node in its own ``DictConfig`` (nesting ``LazyCall`` copies each subtree into its parent, which makes translating a
ResNet-152 slow). :func:`as_config` wraps a finished tree once; ``instantiate`` accepts either form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from .instantiate import target_to_string

__all__ = ["L", "as_config"]


def L(target: Any) -> Callable[..., dict[str, Any]]:  # noqa: N802 (named like LazyCall's usual alias)
    """``L(f)(a=1)`` -> ``{"_target_": f, "a": 1}`` (a dataclass target by its import path, as ``LazyCall`` does:
    omegaconf would turn a dataclass type into a structured config)."""
    if dataclasses.is_dataclass(target):
        target = target_to_string(target)

    def call(**kwargs: Any) -> dict[str, Any]:
        return {"_target_": target, **kwargs}

    return call


def as_config(node: Any) -> Any:
    """``node`` as a ``DictConfig`` (objects such as classes allowed); ``None`` stays ``None``."""
    if node is None or isinstance(node, DictConfig):
        return node
    return DictConfig(node, flags={"allow_objects": True})
