"""detectron2's ``add_export_config`` for YAML configs (the keys its deployment tools read)."""

from __future__ import annotations

from libdet.config import CfgNode

__all__ = ["add_export_config"]


def add_export_config(cfg: CfgNode) -> CfgNode:
    """Add the export options of detectron2's YAML config (``EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT``, False)
    to ``cfg``, in place (a frozen config stays frozen); returns ``cfg``."""
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.EXPORT_CAFFE2 = CfgNode()
    cfg.EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT = False
    if frozen:
        cfg.freeze()
    return cfg
