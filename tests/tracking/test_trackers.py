"""Trackers on synthetic tracks: boxes that move a little each frame keep their ids."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from libdet.structures import Boxes, Instances, pairwise_iou
from libdet.tracking import (
    TRACKER_HEADS_REGISTRY,
    BBoxIOUTracker,
    IOUWeightedHungarianBBoxIOUTracker,
    VanillaHungarianBBoxIOUTracker,
    build_tracker_head,
)

H, W = 100, 200
TRACKERS = [BBoxIOUTracker, VanillaHungarianBBoxIOUTracker, IOUWeightedHungarianBBoxIOUTracker]


def frame(boxes, masks=False):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    inst = Instances((H, W), pred_boxes=Boxes(boxes))
    inst.scores = torch.linspace(0.9, 0.5, len(boxes))
    inst.pred_classes = torch.arange(len(boxes))
    if masks:
        inst.pred_masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            inst.pred_masks[i, y0:y1, x0:x1] = True
    return inst


def moving_tracks(num_frames):
    """Three objects moving right by 4 px per frame; each frame lists them in a different order."""
    starts = [(10, 10, 40, 40), (60, 50, 100, 90), (120, 10, 150, 60)]
    for t in range(num_frames):
        order = [(t + k) % 3 for k in range(3)]
        yield order, [[x0 + 4 * t, y0, x1 + 4 * t, y1] for x0, y0, x1, y1 in (starts[k] for k in order)]


@pytest.mark.parametrize("tracker_cls", TRACKERS)
def test_moving_objects_keep_their_ids(tracker_cls):
    tracker = tracker_cls(video_height=H, video_width=W)
    id_of_object = {}
    for t, (order, boxes) in enumerate(moving_tracks(5)):
        out = tracker.update(frame(boxes))
        assert len(out) == 3
        assert out.ID_period == [t + 1] * 3 and out.lost_frame_count == [0] * 3
        for obj, track_id in zip(order, out.ID):
            assert id_of_object.setdefault(obj, track_id) == track_id
    assert sorted(id_of_object.values()) == [0, 1, 2]


@pytest.mark.parametrize("tracker_cls", TRACKERS)
def test_new_object_gets_a_new_id_and_lost_track_is_kept(tracker_cls):
    tracker = tracker_cls(video_height=H, video_width=W, max_lost_frame_count=1, min_instance_period=1)
    a, b = [10, 10, 40, 40], [100, 50, 140, 90]
    tracker.update(frame([a, b], masks=True))
    out = tracker.update(frame([a, b], masks=True))
    assert out.ID == [0, 1] and out.ID_period == [2, 2]
    # b is missed for one frame: it is carried over (with its mask) as lost; a new object c appears.
    c = [150, 10, 190, 30]
    out = tracker.update(frame([a, c], masks=True))
    assert out.ID == [0, 2, 1]
    assert out.lost_frame_count == [0, 0, 1]
    assert torch.equal(out.pred_boxes.tensor[2], torch.tensor(b, dtype=torch.float32))
    assert out.pred_masks.shape == (3, H, W) and out.pred_masks[2, 60, 120]
    # b comes back: it continues its track; a second missed frame would have dropped it.
    out = tracker.update(frame([a, c, b], masks=True))
    assert out.ID == [0, 2, 1] and out.lost_frame_count == [0, 0, 0]
    assert out.ID_period == [4, 2, 3]
    out = tracker.update(frame([a]))
    out = tracker.update(frame([a]))
    assert out.ID == [0] and len(out) == 1  # lost for 2 frames > max_lost_frame_count


@pytest.mark.parametrize("tracker_cls", TRACKERS)
def test_lost_tracks_are_dropped_by_default(tracker_cls):
    tracker = tracker_cls(video_height=H, video_width=W)
    tracker.update(frame([[10, 10, 40, 40], [100, 50, 140, 90]]))
    out = tracker.update(frame([[10, 10, 40, 40]]))
    assert out.ID == [0] and len(out) == 1


def test_greedy_and_hungarian_differ_on_a_contested_box():
    # X overlaps A most (IoU .82) and B (.54); Y overlaps A (.54) only. Greedy takes X->A and loses B;
    # the assignment trackers match both: X->B, Y->A.
    prev = [[0, 0, 10, 10], [4, 0, 14, 10]]  # A, B
    cur = [[1, 0, 11, 10], [-3, 0, 7, 10]]  # X, Y
    results = {}
    for cls in TRACKERS:
        tracker = cls(video_height=H, video_width=W, min_box_rel_dim=0.0)
        tracker.update(frame(prev))
        results[cls] = tracker.update(frame(cur)).ID
    assert results[BBoxIOUTracker] == [0, 2]
    assert results[VanillaHungarianBBoxIOUTracker] == [1, 0]
    assert results[IOUWeightedHungarianBBoxIOUTracker] == [1, 0]


def _best_assignment(iou, threshold):
    """Brute force: the matching with most pairs above the threshold, then the largest total IoU."""
    n, m = iou.shape
    best, best_key = None, None
    for perm in itertools.permutations(range(m), n):
        pairs = [(i, j) for i, j in enumerate(perm) if iou[i, j] >= threshold]
        key = (len(pairs), round(sum(iou[i, j] for i, j in pairs), 9))
        if best_key is None or key > best_key:
            best, best_key = dict(pairs), key
    return best_key, best


def test_iou_weighted_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(10):
        xy = rng.uniform(0, 60, size=(4, 2))
        prev = np.concatenate([xy, xy + rng.uniform(20, 40, size=(4, 2))], axis=1)
        cur = prev + rng.uniform(-12, 12, size=(4, 4))
        tracker = IOUWeightedHungarianBBoxIOUTracker(video_height=H, video_width=W, track_iou_threshold=0.3)
        tracker.update(frame(prev.tolist()))
        out = tracker.update(frame(cur.tolist()))
        iou = pairwise_iou(
            Boxes(torch.tensor(cur, dtype=torch.float32)), Boxes(torch.tensor(prev, dtype=torch.float32))
        )
        expected_key, _ = _best_assignment(iou.numpy(), 0.3)
        matched = [(i, track) for i, track in enumerate(out.ID[:4]) if track < 4]
        got_key = (len(matched), round(sum(float(iou[i, j]) for i, j in matched), 9))
        assert got_key == pytest.approx(expected_key)


def test_hungarian_refuses_keypoints():
    inst = frame([[10, 10, 40, 40]])
    inst.pred_keypoints = torch.zeros(1, 17, 3)
    with pytest.raises(NotImplementedError, match="pred_keypoints"):
        VanillaHungarianBBoxIOUTracker(video_height=H, video_width=W).update(inst)


def test_max_num_instances_caps_lost_tracks():
    tracker = BBoxIOUTracker(video_height=H, video_width=W, max_num_instances=2, max_lost_frame_count=2)
    boxes = [[10, 10, 40, 40], [60, 10, 90, 40], [120, 10, 150, 40]]
    tracker.update(frame(boxes))
    tracker.update(frame(boxes))
    out = tracker.update(frame([boxes[0]]))
    assert len(out) == 2 and out.ID == [0, 1] and out.lost_frame_count == [0, 1]


def test_build_tracker_head_from_a_yaml_style_config():
    assert "BBoxIOUTracker" in TRACKER_HEADS_REGISTRY
    cfg = SimpleNamespace(
        TRACKER_HEADS=SimpleNamespace(
            TRACKER_NAME="IOUWeightedHungarianBBoxIOUTracker",
            VIDEO_HEIGHT=H,
            VIDEO_WIDTH=W,
            MAX_LOST_FRAME_COUNT=3,
            TRACK_IOU_THRESHOLD=0.7,
        )
    )
    tracker = build_tracker_head(cfg)
    assert isinstance(tracker, IOUWeightedHungarianBBoxIOUTracker)
    assert tracker._max_lost_frame_count == 3 and tracker._track_iou_threshold == 0.7
    cfg.TRACKER_HEADS = SimpleNamespace(TRACKER_NAME="BBoxIOUTracker", VIDEO_WIDTH=W)
    with pytest.raises(KeyError, match="VIDEO_HEIGHT"):
        build_tracker_head(cfg)


def test_build_tracker_head_from_a_cfgnode():
    from libdet.config import CfgNode

    cfg = CfgNode(
        {
            "TRACKER_HEADS": {
                "TRACKER_NAME": "BBoxIOUTracker",
                "VIDEO_HEIGHT": H,
                "VIDEO_WIDTH": W,
                "MIN_BOX_REL_DIM": 0.1,
            }
        }
    )
    tracker = build_tracker_head(cfg)
    assert isinstance(tracker, BBoxIOUTracker) and tracker._min_box_rel_dim == 0.1
    assert tracker.update(frame([[10, 10, 40, 40]])).ID == [0]
