"""Lazy Python-as-config: ``LazyCall`` describes objects, ``instantiate`` builds them, ``LazyConfig``
loads, saves, overrides and prints config files.

detectron2's legacy YAML (yacs) API (``CfgNode``, ``get_cfg``, ``configurable``, ...) is deliberately
not part of libdet: the lazy config is the single way to wire models.
"""

from .instantiate import InstantiationError, instantiate, locate
from .lazy import ConfigKeyError, LazyCall, LazyConfig

__all__ = ["LazyCall", "LazyConfig", "instantiate", "locate", "InstantiationError", "ConfigKeyError"]
