"""Set a config's class count from its training data, for datasets given as specs (``coco:...``, ``yolo:...``).

A user who trains on their own files with ``dataloader.train.dataset.names=coco:train.json@images`` should not
also have to count classes: the model's ``num_classes`` comes from the data. A value given explicitly on the
command line must agree with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from libdet.data import MetadataCatalog
from libdet.data.datasets.specs import KINDS

__all__ = ["set_num_classes_from_data"]

logger = logging.getLogger(__name__)

# where the class count lives: the R-CNN family's ROI heads, or dense detectors (RetinaNet, FCOS) themselves
_NUM_CLASSES_KEYS = ("model.roi_heads.num_classes", "model.num_classes")


def _is_spec(name: Any) -> bool:
    return isinstance(name, str) and name.split(":", 1)[0] in KINDS and ":" in name


def _names(cfg: Any, loader: str) -> list[str]:
    try:
        names = cfg.dataloader[loader].dataset.names
    except (AttributeError, KeyError):
        return []
    return [names] if isinstance(names, str) else list(names or [])


def _select(cfg: Any, key: str) -> tuple[Any, str] | None:
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        if node is None or part not in node:
            return None
        node = node[part]
    return (node, leaf) if node is not None and leaf in node else None


def set_num_classes_from_data(cfg: Any, *, overrides: Sequence[str] = ()) -> list[str] | None:
    """When the training datasets are specs, set ``num_classes`` of the model from their class names.

    Args:
        cfg: a lazy config with ``dataloader.train.dataset.names``.
        overrides: the command-line overrides; a ``num_classes`` among them is "explicit" and must match.

    Returns:
        The class names, or ``None`` when no training dataset is a spec (the config is left as it is).

    Raises:
        ValueError: the datasets disagree on their classes, or an explicit ``num_classes`` disagrees with the
            data (the message names both numbers).
    """
    train = _names(cfg, "train")
    if not any(_is_spec(n) for n in train):
        return None
    classes = {name: MetadataCatalog.get(name).get("thing_classes") for name in train + _names(cfg, "test")}
    classes = {name: list(names) for name, names in classes.items() if names is not None}
    first, class_names = next((name, names) for name, names in classes.items() if _is_spec(name))
    for name, names in classes.items():
        if names != class_names:
            raise ValueError(f"Datasets {first!r} and {name!r} have different classes: {class_names} vs {names}.")
    for key in _NUM_CLASSES_KEYS:
        found = _select(cfg, key)
        if found is None:
            continue
        node, leaf = found
        explicit = [o for o in overrides if o.lstrip("+").split("=", 1)[0] == key]
        if explicit and int(node[leaf]) != len(class_names):
            raise ValueError(
                f"{key}={node[leaf]} was set on the command line, but the training data {first!r} has "
                f"{len(class_names)} classes: {class_names}."
            )
        if node[leaf] != len(class_names):
            logger.info(f"{key}: {node[leaf]} -> {len(class_names)}, the classes of {first!r}: {class_names}")
        node[leaf] = len(class_names)
        return class_names
    raise ValueError(
        f"The training data {first!r} names its classes, but the model config has none of {_NUM_CLASSES_KEYS}."
    )
