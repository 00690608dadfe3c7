"""VideoVisualizer: an object keeps its colour while it moves; new objects get other colours; old ones expire."""

import types

import numpy as np
import pytest
import torch

from libdet.structures import Boxes, Instances
from libdet.utils.video_visualizer import VideoVisualizer
from libdet.utils.visualizer import ColorMode

H, W = 96, 128
META = types.SimpleNamespace(thing_classes=["car", "person"])


def frame():
    return np.full((H, W, 3), 128, dtype=np.uint8)


def boxes_pred(boxes, classes):
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.pred_classes = torch.tensor(classes)
    inst.scores = torch.full((len(classes),), 0.9)
    return inst


def mask_pred(rects, classes):
    inst = Instances((H, W))
    m = torch.zeros(len(rects), H, W, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(rects):
        m[i, y0:y1, x0:x1] = True
    inst.pred_masks = m
    inst.pred_classes = torch.tensor(classes)
    return inst


def outline_color(out, y, x0, x1):
    """Median colour of a horizontal run of box-outline pixels."""
    return np.median(out[y, x0:x1].reshape(-1, 3).astype(int), axis=0)


def test_moving_box_keeps_color_new_box_gets_another():
    vv = VideoVisualizer(META)
    colors = []
    for t in range(3):
        dx = 4 * t
        boxes = [[10 + dx, 10, 50 + dx, 60], [70, 50, 120, 90]]
        classes = [0, 1]
        if t == 2:
            boxes.append([60, 5, 120, 30])
            classes.append(0)
        vv.draw_instance_predictions(frame(), boxes_pred(boxes, classes))
        colors.append([np.asarray(c) for c in vv._last_colors])
    np.testing.assert_allclose(colors[1][0], colors[0][0])
    np.testing.assert_allclose(colors[2][0], colors[0][0])
    np.testing.assert_allclose(colors[2][1], colors[0][1])
    assert not np.allclose(colors[0][0], colors[0][1])
    assert not any(np.allclose(colors[2][2], c) for c in colors[2][:2])


def test_rendered_color_follows_moving_object():
    vv = VideoVisualizer(META)
    seen = []
    for t in range(3):
        dx = 5 * t
        # the order of instances changes between frames: matching is by overlap, not by index
        rects = [(10, 50, 10 + dx, 50 + dx), (55, 90, 70, 120)]
        order = [1, 0] if t == 1 else [0, 1]
        pred = mask_pred([rects[i] for i in order], [[0, 1][i] for i in order])
        out = vv.draw_instance_predictions(frame(), pred).get_image().astype(int)
        seen.append(np.median(out[14:22, 14 + dx : 30 + dx].reshape(-1, 3), axis=0))  # inside object 0
    assert np.abs(seen[0] - 128).max() > 20  # it is coloured
    assert np.abs(seen[1] - seen[0]).max() <= 2 and np.abs(seen[2] - seen[0]).max() <= 2


def test_class_change_or_no_overlap_breaks_the_match():
    vv = VideoVisualizer(META)
    vv.draw_instance_predictions(frame(), boxes_pred([[10, 10, 50, 60]], [0]))
    first = vv._last_colors[0]
    vv.draw_instance_predictions(frame(), boxes_pred([[10, 10, 50, 60]], [1]))  # same place, other class
    assert not np.allclose(vv._last_colors[0], first)


def test_stale_instances_expire():
    vv = VideoVisualizer(META, ttl=2)
    vv.draw_instance_predictions(frame(), boxes_pred([[10, 10, 50, 60]], [0]))
    first = vv._last_colors[0]
    vv.draw_instance_predictions(frame(), boxes_pred([[80, 10, 120, 60]], [1]))
    assert len(vv._old_instances) == 2
    vv.draw_instance_predictions(frame(), boxes_pred([[80, 10, 120, 60]], [1]))
    assert len(vv._old_instances) == 1  # the first object was unseen for 2 frames
    vv.draw_instance_predictions(frame(), boxes_pred([[10, 10, 50, 60]], [0]))
    assert np.allclose(vv._last_colors[0], first)  # its colour was free again: the most distinct one


def test_tracker_ids_fix_colors():
    vv = VideoVisualizer(META)
    p = boxes_pred([[10, 10, 50, 60], [70, 50, 120, 90]], [0, 1])
    p.ID = torch.tensor([7, 3])
    vv.draw_instance_predictions(frame(), p)
    c7, c3 = vv._last_colors
    q = boxes_pred([[80, 50, 120, 90], [10, 10, 40, 40]], [0, 1])  # far moves: only the IDs link them
    q.ID = torch.tensor([3, 7])
    vv.draw_instance_predictions(frame(), q)
    np.testing.assert_allclose(vv._last_colors[0], c3)
    np.testing.assert_allclose(vv._last_colors[1], c7)


def test_empty_frame_image_bw_and_segmentations():
    vv = VideoVisualizer(META, instance_mode=ColorMode.IMAGE_BW)
    rng = np.random.default_rng(0)
    img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    out = vv.draw_instance_predictions(img, Instances((H, W))).get_image().astype(int)
    assert (out.max(axis=2) - out.min(axis=2) <= 1).all()
    with pytest.raises(ValueError, match="instance_mode"):
        VideoVisualizer(META, instance_mode=ColorMode.SEGMENTATION)

    md = types.SimpleNamespace(
        stuff_classes=["sky", "road"], stuff_colors=[(255, 0, 0), (0, 0, 255)], thing_classes=["car"]
    )
    vv = VideoVisualizer(md)
    seg = np.zeros((H, W), dtype=np.int64)
    seg[48:] = 1
    out = vv.draw_sem_seg(frame(), seg).get_image().astype(int)
    assert out[5, 5, 0] > out[5, 5, 2] + 60 and out[90, 5, 2] > out[90, 5, 0] + 60
    pan_colors = []
    for t in range(2):
        pan = np.zeros((H, W), dtype=np.int32)
        pan[60:] = 1
        pan[10:40, 10 + 3 * t : 60 + 3 * t] = 2
        info = [{"id": 1, "category_id": 1, "isthing": False}, {"id": 2, "category_id": 0, "isthing": True}]
        out = vv.draw_panoptic_seg(frame(), pan, info).get_image().astype(int)
        pan_colors.append(np.median(out[12:20, 15:30].reshape(-1, 3), axis=0))
        assert out[90, 5, 2] > out[90, 5, 0] + 40
    assert np.abs(pan_colors[0] - pan_colors[1]).max() <= 2 and np.abs(pan_colors[0] - 128).max() > 20
