"""The tracker interface, the bookkeeping every box tracker shares, and the YAML-config registry."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from fvcore.common.registry import Registry

from libdet.structures import Instances

__all__ = ["TRACKER_HEADS_REGISTRY", "BaseTracker", "build_tracker_head"]

TRACKER_HEADS_REGISTRY = Registry("TRACKER_HEADS")
TRACKER_HEADS_REGISTRY.__doc__ = """Trackers by class name, for ``cfg.TRACKER_HEADS.TRACKER_NAME`` of YAML configs."""


class BaseTracker:
    """A tracker: :meth:`update` is called once per frame, in order, with that frame's predictions.

    Subclasses keep the previous frame's output in ``self._prev_instances`` (``None`` before the first frame).
    """

    def __init__(self) -> None:
        self._prev_instances: Instances | None = None
        self._id_count = 0

    def update(self, predictions: Instances) -> Instances:
        """Assign track ids to one frame's ``predictions`` (see the subclasses); returns the tracked instances."""
        raise NotImplementedError(f"{type(self).__name__} must implement update().")

    def _initialize_extra_fields(self, instances: Instances) -> Instances:
        """Add ``ID``, ``ID_period`` and ``lost_frame_count`` list fields. On the first frame every instance
        starts a new track; later frames get ``None`` until matching fills them in."""
        n = len(instances)
        if self._prev_instances is None:
            instances.ID = list(range(self._id_count, self._id_count + n))
            instances.ID_period = [1] * n
            instances.lost_frame_count = [0] * n
            self._id_count += n
        else:
            instances.ID = [None] * n
            instances.ID_period = [None] * n
            instances.lost_frame_count = [None] * n
        return instances

    def _continue_track(self, instances: Instances, idx: int, prev_idx: int) -> None:
        """Instance ``idx`` of this frame continues the track of previous instance ``prev_idx``."""
        prev = self._prev_instances
        instances.ID[idx] = prev.ID[prev_idx]
        instances.ID_period[idx] = prev.ID_period[prev_idx] + 1
        instances.lost_frame_count[idx] = 0

    def _assign_new_ids(self, instances: Instances, matched_idx: Iterable[int]) -> Instances:
        """Start a new track for every instance not in ``matched_idx``."""
        matched = set(matched_idx)
        for idx in range(len(instances)):
            if idx not in matched:
                instances.ID[idx] = self._id_count
                instances.ID_period[idx] = 1
                instances.lost_frame_count[idx] = 0
                self._id_count += 1
        return instances


def _box_tracker_kwargs(tracker_cls: type, node: Any) -> dict[str, Any]:
    """Keyword arguments of ``tracker_cls`` read from ``cfg.TRACKER_HEADS`` (argument ``video_height`` <-
    key ``VIDEO_HEIGHT``); arguments without a key keep their defaults."""
    kwargs = {}
    for name, param in inspect.signature(tracker_cls.__init__).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        key = name.upper()
        has_key = key in node if hasattr(node, "__contains__") else hasattr(node, key)
        if has_key:
            kwargs[name] = node[key] if hasattr(node, "__getitem__") else getattr(node, key)
        elif param.default is inspect.Parameter.empty:
            raise KeyError(f"build_tracker_head: cfg.TRACKER_HEADS has no {key}, which {tracker_cls.__name__} needs.")
    return kwargs


def build_tracker_head(cfg: Any) -> BaseTracker:
    """Build the tracker named by ``cfg.TRACKER_HEADS.TRACKER_NAME`` (a class in :data:`TRACKER_HEADS_REGISTRY`)
    with its arguments from ``cfg.TRACKER_HEADS`` (e.g. ``VIDEO_HEIGHT``, ``TRACK_IOU_THRESHOLD``)."""
    node = cfg.TRACKER_HEADS
    name = node.TRACKER_NAME
    tracker_cls = TRACKER_HEADS_REGISTRY.get(name)
    return tracker_cls(**_box_tracker_kwargs(tracker_cls, node))
