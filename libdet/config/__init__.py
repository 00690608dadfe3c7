"""Lazy Python-as-config: ``LazyCall`` describes objects, ``instantiate`` builds them, ``LazyConfig``
loads, saves, overrides and prints config files.

detectron2's YAML config layer (``CfgNode``, ``get_cfg``, ``configurable``, ``global_cfg``) sits at the edge:
``libdet.config.yaml_translate`` turns a YAML config into the same lazy config, so both build the same modules.
"""

from .compat import downgrade_config, upgrade_config
from .config import CfgNode, configurable, get_cfg, global_cfg, set_global_cfg
from .instantiate import InstantiationError, instantiate, locate
from .lazy import ConfigKeyError, LazyCall, LazyConfig

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "InstantiationError",
    "LazyCall",
    "LazyConfig",
    "configurable",
    "downgrade_config",
    "get_cfg",
    "global_cfg",
    "instantiate",
    "locate",
    "set_global_cfg",
    "upgrade_config",
]
