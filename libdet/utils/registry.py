"""Name -> object registries (``detectron2.utils.registry`` compatible).

libdet's core wires modules through lazy configs, by import path; registries exist so that the names in
detectron2-style YAML configs (``MODEL.BACKBONE.NAME: build_my_backbone``) find users' registered classes and
functions (see ``libdet.modeling.registries``).
"""

from __future__ import annotations

from typing import Any

from fvcore.common.registry import Registry

__all__ = ["Registry", "locate"]


def locate(name: str) -> Any:
    """The object at dotted import path ``name`` (e.g. ``"libdet.modeling.ResNet"``).

    Raises:
        ImportError: naming the path when it cannot be found.
    """
    from libdet.config.instantiate import locate as _locate

    return _locate(name)
