"""Upgrade / downgrade YAML configs between key layouts (``VERSION``), as detectron2 does.

Version 1 is the layout of detectron2's first releases; version 2 (the current one, see ``defaults.py``)
renamed keys. A converter for version ``v`` maps a version ``v - 1`` config to version ``v`` and back. Keys a
downgrade cannot express are kept under their new names, so an upgrade after a downgrade restores them.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import CfgNode

__all__ = ["downgrade_config", "guess_version", "upgrade_config"]

logger = logging.getLogger(__name__)


def upgrade_config(cfg: CfgNode, to_version: int | None = None) -> CfgNode:
    """A copy of ``cfg`` converted to ``to_version`` (default: the latest, ``get_cfg().VERSION``)."""
    cfg = cfg.clone()
    if to_version is None:
        to_version = _latest_version()
    if cfg.VERSION > to_version:
        raise ValueError(f"upgrade_config: cannot upgrade from VERSION {cfg.VERSION} to the older {to_version}.")
    for version in range(cfg.VERSION, to_version):
        _CONVERTERS[version + 1].upgrade(cfg)
        cfg.VERSION = version + 1
    return cfg


def downgrade_config(cfg: CfgNode, to_version: int) -> CfgNode:
    """A copy of ``cfg`` converted to the older ``to_version`` (to merge an old config file into it)."""
    cfg = cfg.clone()
    if cfg.VERSION < to_version:
        raise ValueError(f"downgrade_config: cannot downgrade from VERSION {cfg.VERSION} to the newer {to_version}.")
    for version in range(cfg.VERSION, to_version, -1):
        _CONVERTERS[version].downgrade(cfg)
        cfg.VERSION = version - 1
    return cfg


def guess_version(cfg: CfgNode, filename: str) -> int:
    """The ``VERSION`` of a config that does not state one, from the keys it uses (logged)."""
    if any(_has(cfg, old) for old, _ in _ConverterV2.RENAME) or _has(cfg, "MODEL.RPN_HEAD.NAME"):
        logger.warning(f"Config {filename!r} has no VERSION and uses version-1 keys: treating it as version 1.")
        return 1
    return _latest_version()


def _latest_version() -> int:
    from .defaults import _C

    return int(_C.VERSION)


def _has(cfg: Any, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        if part not in node:
            node[part] = CfgNode()
        node = node[part]
    node[parts[-1]] = value


def _del(cfg: CfgNode, key: str) -> None:
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    # drop parents left empty
    if len(parts) > 1 and len(node) == 0:
        _del(cfg, ".".join(parts[:-1]))


def _rename(cfg: CfgNode, old: str, new: str) -> None:
    if _has(cfg, old):
        value = _get(cfg, old)
        _del(cfg, old)
        _set(cfg, new, value)


class _ConverterV2:
    """Version 1 -> 2: anchor options moved to ``MODEL.ANCHOR_GENERATOR``, test-time options got ``_TEST``
    suffixes, panoptic options were grouped, ``MODEL.WEIGHT`` became ``MODEL.WEIGHTS``."""

    # (version-1 key, version-2 key)
    RENAME = [
        ("MODEL.WEIGHT", "MODEL.WEIGHTS"),
        ("MODEL.PANOPTIC_FPN.SEMANTIC_LOSS_SCALE", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT"),
        ("MODEL.PANOPTIC_FPN.RPN_LOSS_SCALE", "MODEL.RPN.LOSS_WEIGHT"),
        ("MODEL.PANOPTIC_FPN.INSTANCE_LOSS_SCALE", "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT"),
        ("MODEL.PANOPTIC_FPN.COMBINE_ON", "MODEL.PANOPTIC_FPN.COMBINE.ENABLED"),
        ("MODEL.PANOPTIC_FPN.COMBINE_OVERLAP_THRESHOLD", "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH"),
        ("MODEL.PANOPTIC_FPN.COMBINE_STUFF_AREA_LIMIT", "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT"),
        (
            "MODEL.PANOPTIC_FPN.COMBINE_INSTANCES_CONFIDENCE_THRESHOLD",
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
        ),
        ("MODEL.ROI_HEADS.SCORE_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
        ("MODEL.ROI_HEADS.NMS", "MODEL.ROI_HEADS.NMS_THRESH_TEST"),
        ("MODEL.RETINANET.INFERENCE_SCORE_THRESHOLD", "MODEL.RETINANET.SCORE_THRESH_TEST"),
        ("MODEL.RETINANET.INFERENCE_TOPK_CANDIDATES", "MODEL.RETINANET.TOPK_CANDIDATES_TEST"),
        ("MODEL.RETINANET.INFERENCE_NMS_THRESHOLD", "MODEL.RETINANET.NMS_THRESH_TEST"),
        ("TEST.DETECTIONS_PER_IMG", "TEST.DETECTIONS_PER_IMAGE"),
        ("TEST.AUG_ON", "TEST.AUG.ENABLED"),
        ("TEST.AUG_MIN_SIZES", "TEST.AUG.MIN_SIZES"),
        ("TEST.AUG_MAX_SIZE", "TEST.AUG.MAX_SIZE"),
        ("TEST.AUG_FLIP", "TEST.AUG.FLIP"),
    ]

    # Version 1 kept the anchor options (and the RPN head name) under the meta-architecture's own section.
    _ANCHOR_KEYS = [("ANCHOR_SIZES", "SIZES"), ("ANCHOR_ASPECT_RATIOS", "ASPECT_RATIOS")]

    @classmethod
    def upgrade(cls, cfg: CfgNode) -> None:
        for old, new in cls.RENAME:
            _rename(cfg, old, new)
        section = "RETINANET" if _meta_arch(cfg) == "RetinaNet" else "RPN"
        for old, new in cls._ANCHOR_KEYS:
            _rename(cfg, f"MODEL.{section}.{old}", f"MODEL.ANCHOR_GENERATOR.{new}")
        _rename(cfg, "MODEL.RPN_HEAD.NAME", "MODEL.RPN.HEAD_NAME")
        # Anchor options of the other section were unused in version 1.
        other = "RPN" if section == "RETINANET" else "RETINANET"
        for old, _ in cls._ANCHOR_KEYS:
            if _has(cfg, f"MODEL.{other}.{old}"):
                _del(cfg, f"MODEL.{other}.{old}")
        for unused in ("MODEL.RETINANET.ANCHOR_STRIDES", "MODEL.RPN.ANCHOR_STRIDES"):
            if _has(cfg, unused):
                _del(cfg, unused)

    @classmethod
    def downgrade(cls, cfg: CfgNode) -> None:
        for old, new in cls.RENAME[::-1]:
            _rename(cfg, new, old)
        section = "RETINANET" if _meta_arch(cfg) == "RetinaNet" else "RPN"
        for old, new in cls._ANCHOR_KEYS:
            _rename(cfg, f"MODEL.ANCHOR_GENERATOR.{new}", f"MODEL.{section}.{old}")
        _rename(cfg, "MODEL.RPN.HEAD_NAME", "MODEL.RPN_HEAD.NAME")


def _meta_arch(cfg: Any) -> str:
    return _get(cfg, "MODEL.META_ARCHITECTURE") if _has(cfg, "MODEL.META_ARCHITECTURE") else "GeneralizedRCNN"


_CONVERTERS = {2: _ConverterV2}
