"""Visualizer: every drawing changes pixels where the annotation is, and only there (within a margin)."""

import types

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from libdet.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from libdet.utils.colormap import colormap
from libdet.utils.visualizer import ColorMode, GenericMask, VisImage, Visualizer

H, W = 96, 128
GREY = 128


def flat(h=H, w=W, value=GREY):
    return np.full((h, w, 3), value, dtype=np.uint8)


def changed(out, img, tol=3):
    return np.any(np.abs(out.astype(np.int32) - img.astype(np.int32)) > tol, axis=2)


def region(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), dtype=bool)
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return m


def meta(**kw):
    base = dict(thing_classes=["cat", "dog", "person"])
    base.update(kw)
    return types.SimpleNamespace(**base)


def rect_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_unannotated_image_round_trips_exactly():
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    out = Visualizer(img).get_output().get_image()
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, img)


def test_grey_and_tensor_inputs_accepted_bad_shape_rejected():
    img = np.full((H, W), 77, dtype=np.uint8)
    np.testing.assert_array_equal(Visualizer(img).get_output().get_image(), np.stack([img] * 3, axis=2))
    t = torch.full((H, W, 3), 200.0)
    assert (Visualizer(t).get_output().get_image() == 200).all()
    with pytest.raises(ValueError, match="img_rgb"):
        Visualizer(np.zeros((3, H, W), dtype=np.uint8))


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_save_writes_png_of_scaled_size(tmp_path, scale):
    vis = Visualizer(flat(), scale=scale)
    vis.draw_box([10, 10, 60, 50], edge_color="r")
    path = str(tmp_path / "out.png")
    vis.get_output().save(path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (round(W * scale), round(H * scale))
        arr = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(arr, vis.get_output().get_image())
    pdf = tmp_path / "out.pdf"
    vis.get_output().save(str(pdf))
    assert pdf.read_bytes()[:4] == b"%PDF"


def test_default_font_size_scales_with_image():
    assert Visualizer(flat(64, 64))._default_font_size == 10
    assert Visualizer(flat(64, 64), scale=2.0)._default_font_size == 5
    assert Visualizer(flat(1800, 1800))._default_font_size == 20


def test_draw_box_changes_only_its_outline():
    img = flat()
    x0, y0, x1, y1 = 20, 30, 100, 80
    out = Visualizer(img).draw_box([x0, y0, x1, y1], edge_color="r", alpha=1.0).get_image()
    diff = changed(out, img)
    m = 3  # half the line width (2.5 pt ~ 3.5 px) plus antialiasing
    assert not (diff & ~region(y0 - m, y1 + m, x0 - m, x1 + m)).any()
    assert not (diff & region(y0 + m, y1 - m, x0 + m, x1 - m)).any()
    for y, x in [(y0, 60), (y1, 60), (55, x0), (55, x1)]:
        assert diff[y, x] and out[y, x, 0] > out[y, x, 1] + 50, (y, x, out[y, x])


def test_draw_line_circle_polygon_and_text_stay_local():
    img = flat()
    vis = Visualizer(img)
    vis.draw_line([10, 60], [20, 20], color="b")
    vis.draw_circle((100, 70), color="r", radius=4)
    vis.draw_polygon(np.array([[20, 50], [50, 50], [35, 80]]), color="g", alpha=0.9)
    diff = changed(vis.get_output().get_image(), img)
    allowed = region(16, 25, 7, 64) | region(64, 77, 94, 107) | region(46, 84, 16, 54)
    assert not (diff & ~allowed).any()
    assert diff[20, 35] and diff[70, 100] and diff[60, 35]

    img2 = flat(value=200)
    out = Visualizer(img2).draw_text("hello", (64, 40)).get_image()
    d2 = changed(out, img2)
    ys, xs = np.nonzero(d2)
    assert len(ys) > 30
    assert ys.min() >= 36 and ys.max() < 70 and abs((xs.min() + xs.max()) / 2 - 64) < 6  # centred, below y


def test_draw_text_bigger_font_covers_more():
    img = flat(value=200)
    small = changed(Visualizer(img).draw_text("abc", (64, 20), font_size=6).get_image(), img).sum()
    big = changed(Visualizer(img).draw_text("abc", (64, 20), font_size=14).get_image(), img).sum()
    assert big > 2 * small > 0


def test_draw_rotated_box_angle_0_and_90():
    img = flat()
    m = 3
    out0 = Visualizer(img).draw_rotated_box_with_label([64, 48, 60, 30, 0], edge_color="r", alpha=1).get_image()
    d0 = changed(out0, img)
    assert not (d0 & ~region(33 - m, 63 + m, 34 - m, 94 + m)).any() and d0[33, 64] and d0[48, 34]
    out90 = Visualizer(img).draw_rotated_box_with_label([64, 48, 60, 30, 90], edge_color="r", alpha=1).get_image()
    d90 = changed(out90, img)
    assert not (d90 & ~region(18 - m, 78 + m, 49 - m, 79 + m)).any() and d90[18, 64] and d90[48, 49]


def test_overlay_rotated_instances_with_labels():
    img = flat()
    vis = Visualizer(img, scale=1.0)
    vis.overlay_instances(boxes=np.array([[64, 48, 60, 40, 30.0]]), labels=["tilted"])
    assert changed(vis.get_output().get_image(), img).sum() > 100
    with pytest.raises(ValueError, match="rotated"):
        Visualizer(img).overlay_instances(boxes=np.array([[64, 48, 60, 40, 30.0]]), masks=[rect_mask(0, 5, 0, 5)])


def test_generic_mask_conversions():
    m = rect_mask(30, 60, 30, 70)
    g = GenericMask(m, H, W)
    assert not g.has_holes and g.area() == 1200
    np.testing.assert_allclose(g.bbox(), [30, 30, 70, 60])
    assert len(g.polygons) == 1
    pts = g.polygons[0].reshape(-1, 2)
    assert pts[:, 0].min() == pytest.approx(30) and pts[:, 0].max() == pytest.approx(70)
    back = GenericMask(g.polygons, H, W)
    inter = (back.mask & m).sum()
    assert inter / (back.mask | m).sum() > 0.97

    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    np.testing.assert_array_equal(GenericMask(rle, H, W).mask, m)
    np.testing.assert_array_equal(GenericMask(torch.from_numpy(m).float() * 0.9, H, W).mask, m)

    ring = rect_mask(20, 70, 20, 90) & ~rect_mask(35, 55, 40, 70)
    g2 = GenericMask(ring, H, W)
    assert g2.has_holes and len(g2.polygons) == 2
    assert GenericMask(np.zeros((H, W)), H, W).polygons == []


def test_generic_mask_errors():
    with pytest.raises(ValueError, match="image size"):
        GenericMask(np.zeros((10, 10)), H, W)
    with pytest.raises(ValueError, match="polygon 0"):
        GenericMask([[1, 2, 3, 4]], H, W)
    with pytest.raises(ValueError, match="RLE size"):
        GenericMask({"size": [5, 5], "counts": "PP"}, H, W)
    with pytest.raises(TypeError):
        GenericMask(3.0, H, W)


def test_mask_overlay_inside_mask_only():
    img = flat()
    yy, xx = np.mgrid[:H, :W]
    disk = (yy - 48) ** 2 + (xx - 64) ** 2 <= 25**2
    out = Visualizer(img).overlay_instances(masks=[disk], assigned_colors=["red"], alpha=0.6).get_image()
    diff = changed(out, img)
    grown = ndimage.binary_dilation(disk, iterations=2)
    inner = ndimage.binary_erosion(disk, iterations=2)
    assert not (diff & ~grown).any()
    assert diff[inner].mean() > 0.99
    assert (out[inner][:, 0].astype(int) > out[inner][:, 1].astype(int) + 50).all()


def test_mask_with_hole_leaves_hole_untouched():
    img = flat()
    ring = rect_mask(20, 76, 20, 108) & ~rect_mask(36, 60, 44, 84)
    out = Visualizer(img).draw_binary_mask(ring, color="blue", alpha=0.7).get_image()
    diff = changed(out, img)
    assert not diff[ndimage.binary_erosion(~ring, iterations=2)].any()
    assert diff[ndimage.binary_erosion(ring, iterations=2)].all()


@pytest.mark.parametrize("kind", ["tensor", "bitmasks", "polygons", "rle"])
def test_mask_formats_render_alike(kind):
    from pycocotools import mask as mask_util

    img = flat()
    m = rect_mask(20, 70, 30, 100)
    ref = changed(Visualizer(img).overlay_instances(masks=[m], assigned_colors=["g"]).get_image(), img)
    if kind == "tensor":
        masks = torch.from_numpy(m)[None]
    elif kind == "bitmasks":
        masks = BitMasks(torch.from_numpy(m)[None])
    elif kind == "polygons":
        masks = PolygonMasks([[[30, 20, 100, 20, 100, 70, 30, 70]]])
    else:
        masks = [mask_util.encode(np.asfortranarray(m.astype(np.uint8)))]
    got = changed(Visualizer(img).overlay_instances(masks=masks, assigned_colors=["g"]).get_image(), img)
    assert (got & ref).sum() / (got | ref).sum() > 0.95


def test_soft_mask_strength_follows_probability():
    img = flat()
    soft = np.zeros((H, W), dtype=np.float32)
    soft[:, 32:64] = 0.3
    soft[:, 64:96] = 1.0
    out = Visualizer(img).draw_soft_mask(soft, color="red", alpha=0.8).get_image().astype(int)
    assert (out[:, :32] == GREY).all() and (out[:, 96:] == GREY).all()
    redness = out[..., 0] - out[..., 1]
    assert 0 < np.median(redness[:, 32:64]) < np.median(redness[:, 64:96])


def make_predictions(boxes, classes, scores=None, masks=None, keypoints=None):
    inst = Instances((H, W))
    if boxes is not None:
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.pred_classes = torch.tensor(classes)
    if scores is not None:
        inst.scores = torch.tensor(scores)
    if masks is not None:
        inst.pred_masks = torch.from_numpy(np.stack(masks))
    if keypoints is not None:
        inst.pred_keypoints = torch.tensor(keypoints, dtype=torch.float32)
    return inst


def test_instance_box_and_label_stay_in_box():
    img = flat()
    box = [10, 20, 110, 80]  # large: the label goes inside, at the top-left corner
    out = Visualizer(img, meta()).draw_instance_predictions(make_predictions([box], [1], [0.9])).get_image()
    diff = changed(out, img)
    m = 3
    assert not (diff & ~region(20 - m, 80 + m, 10 - m, 110 + m)).any()
    label_area = region(22, 40, 12, 60)
    dark = (out.astype(int).sum(axis=2) < 120) & label_area  # the label sits on a black box
    assert dark.sum() > 50
    assert not diff[region(50, 76, 60, 106)].any()


def test_label_text_comes_from_metadata_thing_classes():
    img = flat()
    pred = make_predictions([[10, 20, 110, 80]], [1], [0.9])
    out_a = Visualizer(img, meta(thing_classes=["cat", "dog"])).draw_instance_predictions(pred).get_image()
    out_b = Visualizer(img, meta(thing_classes=["cat", "walrus"])).draw_instance_predictions(pred).get_image()
    out_none = Visualizer(img, None).draw_instance_predictions(pred).get_image()
    d = changed(out_a, out_b)
    assert d.sum() > 20
    assert not (d & ~region(17, 45, 8, 112)).any()  # only the label region differs
    assert changed(out_none, out_a).sum() > 20  # without names, the class id is written
    with pytest.raises(ValueError, match="thing_classes"):
        Visualizer(img, meta(thing_classes=["cat"])).draw_instance_predictions(pred)


def test_small_instance_label_goes_below_box():
    img = flat()
    box = [20, 20, 40, 35]
    out = Visualizer(img, meta()).draw_instance_predictions(make_predictions([box], [0], [0.5])).get_image()
    diff = changed(out, img)
    assert diff[36:50, 20:40].sum() > 30  # label under the box
    assert not diff[:16].any()


def test_instance_masks_and_image_bw():
    rng = np.random.default_rng(0)
    img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    m = rect_mask(30, 70, 40, 90)
    pred = Instances((H, W))
    pred.pred_masks = torch.from_numpy(m)[None]
    out = Visualizer(img, meta(), instance_mode=ColorMode.IMAGE_BW).draw_instance_predictions(pred).get_image()
    out = out.astype(int)
    outside = ~ndimage.binary_dilation(m, iterations=3)
    spread = out.max(axis=2) - out.min(axis=2)
    assert (spread[outside] <= 1).all()  # grey background
    inner = ndimage.binary_erosion(m, iterations=3)
    assert np.median(spread[inner]) > 30  # colours kept (tinted) inside the mask
    img_out = Visualizer(img, meta(), instance_mode=ColorMode.IMAGE).draw_instance_predictions(pred).get_image()
    np.testing.assert_array_equal(img_out[outside], img[outside])


def test_segmentation_mode_uses_thing_colors():
    img = flat()
    masks = [rect_mask(10, 40, 10, 50), rect_mask(50, 90, 60, 120)]
    pred = make_predictions(None, [0, 1], masks=masks)
    md = meta(thing_colors=[(255, 0, 0), (0, 0, 255)])
    out = Visualizer(img, md, instance_mode=ColorMode.SEGMENTATION).draw_instance_predictions(pred).get_image()
    out = out.astype(int)
    a, b = out[15:25, 15:30].reshape(-1, 3), out[75:88, 65:80].reshape(-1, 3)  # away from the centred labels
    assert (a[:, 0] > a[:, 2] + 40).mean() > 0.9
    assert (b[:, 2] > b[:, 0] + 40).mean() > 0.9


def test_image_mode_gives_instances_distinct_colors():
    img = flat()
    masks = [rect_mask(10, 40, 10, 50), rect_mask(50, 90, 60, 120)]
    out = Visualizer(img).overlay_instances(masks=masks, alpha=0.8).get_image().astype(int)
    ca, cb = np.median(out[15:25, 15:30].reshape(-1, 3), 0), np.median(out[75:85, 65:80].reshape(-1, 3), 0)
    assert np.abs(ca - cb).max() > 60


def test_overlay_instances_count_mismatch():
    with pytest.raises(ValueError, match="disagree"):
        Visualizer(flat()).overlay_instances(boxes=np.zeros((2, 4)), labels=["a"])


KP_META = dict(keypoint_names=["a", "b", "c", "d"], keypoint_connection_rules=[("a", "b", (0, 255, 0))])


def test_keypoints_and_skeleton_near_points():
    img = flat()
    kps = [[[20, 20, 1.0], [90, 20, 1.0], [60, 70, 1.0], [100, 80, 0.01]]]  # d is below the threshold
    pred = make_predictions(None, [2], keypoints=kps)
    out = Visualizer(img, meta(**KP_META)).draw_instance_predictions(pred).get_image().astype(int)
    diff = changed(out, img)
    near = region(14, 27, 14, 27) | region(14, 27, 84, 97) | region(64, 77, 54, 67) | region(15, 26, 14, 97)
    assert not (diff & ~near).any()
    for x, y in [(20, 20), (90, 20), (60, 70)]:
        assert out[y, x, 0] > 200 and out[y, x, 1] < 80  # red dot
    mid = out[20, 45:65]
    assert (mid[:, 1] > mid[:, 0] + 80).all()  # green a-b line
    assert not diff[77:85, 95:105].any()
    with pytest.raises(ValueError, match="keypoint_names"):
        Visualizer(img, meta(keypoint_names=["a"])).draw_instance_predictions(pred)


SEG_META = dict(stuff_classes=["sky", "grass"], stuff_colors=[(255, 0, 0), (0, 0, 255)])


def test_sem_seg_colors_follow_map():
    img = flat()
    seg = np.zeros((H, W), dtype=np.int64)
    seg[48:] = 1
    seg[:10, :10] = 255  # ignored: outside stuff_classes
    out = Visualizer(img, meta(**SEG_META)).draw_sem_seg(torch.from_numpy(seg)).get_image().astype(int)
    top, bottom = out[12:44].reshape(-1, 3), out[52:].reshape(-1, 3)
    assert (top[:, 0] > top[:, 2] + 80).mean() > 0.8
    assert (bottom[:, 2] > bottom[:, 0] + 80).mean() > 0.8
    assert (out[:8, :8] == GREY).all()
    # names are written at the regions' centres on dark boxes
    dark = out.sum(axis=2) < 150
    assert dark[15:35, 45:85].sum() > 20 and dark[62:85, 45:85].sum() > 20
    with pytest.raises(ValueError, match="image size"):
        Visualizer(img).draw_sem_seg(seg[:10])


def test_sem_seg_without_metadata_uses_palette_and_skips_ignore():
    img = flat()
    seg = np.full((H, W), 255)
    seg[:, :64] = 3
    out = Visualizer(img).draw_sem_seg(seg, alpha=1.0).get_image().astype(int)
    expect = colormap(rgb=True, maximum=255)[3]
    assert (np.abs(out[5:20, 5:30] - expect).max(axis=2) <= 2).mean() > 0.9
    np.testing.assert_array_equal(out[:, 70:], GREY)


def test_panoptic_seg_stuff_things_and_void():
    img = flat()
    pan = np.zeros((H, W), dtype=np.int32)  # 0 is void: not in segments_info
    pan[48:] = 1
    pan[10:40, 10:60] = 2
    info = [
        {"id": 1, "category_id": 1, "isthing": False},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.8},
    ]
    md = meta(thing_colors=[(255, 0, 0), (0, 255, 0), (0, 0, 255)], **SEG_META)
    out = Visualizer(img, md, instance_mode=ColorMode.SEGMENTATION).draw_panoptic_seg(pan, info).get_image()
    out = out.astype(int)
    stuff = out[80:92, 5:40].reshape(-1, 3)  # away from the labels
    assert (stuff[:, 2] > stuff[:, 0] + 60).mean() > 0.9  # grass is blue
    thing = out[12:20, 12:30].reshape(-1, 3)
    assert (thing[:, 0] > thing[:, 2] + 40).mean() > 0.9  # cat is (jittered) red
    np.testing.assert_array_equal(out[5:8, 70:120], GREY)  # void untouched
    # no segments_info: ids decode as category * label_divisor + instance
    pan2 = np.where(pan == 1, 1 * 1000, np.where(pan == 2, 0 * 1000 + 1, -1))
    md2 = meta(label_divisor=1000, thing_dataset_id_to_contiguous_id={1: 0}, **SEG_META)
    out2 = Visualizer(img, md2).draw_panoptic_seg(pan2, None).get_image()
    assert changed(out2, img)[80:92, 5:40].mean() > 0.9 and changed(out2, img)[12:20, 12:30].mean() > 0.9
    with pytest.raises(ValueError, match="label_divisor"):
        Visualizer(img).draw_panoptic_seg(pan2, None)
    with pytest.raises(ValueError, match="isthing"):
        Visualizer(img).draw_panoptic_seg(pan, [{"id": 1, "category_id": 1}])


def test_panoptic_image_bw_greys_void():
    rng = np.random.default_rng(1)
    img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    pan = np.zeros((H, W), dtype=np.int32)
    pan[40:80, 40:100] = 5
    out = (
        Visualizer(img, meta(), instance_mode=ColorMode.IMAGE_BW)
        .draw_panoptic_seg(pan, [{"id": 5, "category_id": 0, "isthing": True}])
        .get_image()
        .astype(int)
    )
    assert (out[:30].max(axis=2) - out[:30].min(axis=2) <= 1).all()


def test_draw_dataset_dict_boxes_polygons_rle_keypoints(tmp_path):
    from pycocotools import mask as mask_util

    img = flat()
    rle = mask_util.encode(np.asfortranarray(rect_mask(60, 90, 80, 120).astype(np.uint8)))
    dic = {
        "image_id": 7,
        "height": H,
        "width": W,
        "annotations": [
            {
                "bbox": [10, 10, 50, 40],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 2,
                "segmentation": [[15, 15, 55, 15, 55, 45, 15, 45]],
                "keypoints": [20, 20, 2, 40, 30, 2, 0, 0, 0, 0, 0, 0],
            },
            {
                "bbox": [80, 60, 120, 90],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "iscrowd": 1,
                "segmentation": rle,
                "keypoints": [0] * 12,
            },
        ],
    }
    out = Visualizer(img, meta(**KP_META)).draw_dataset_dict(dic).get_image()
    diff = changed(out, img)
    # small boxes get their labels below them
    allowed = region(7, 53, 7, 63) | region(48, 70, 7, 80) | region(57, 93, 77, 123) | region(88, H, 77, W)
    assert not (diff & ~allowed).any()
    assert diff[30, 30] and diff[75, 100]
    bad = {"image_id": 7, "annotations": [{"bbox": [1, 1, 5, 5], "category_id": 0}]}
    with pytest.raises(ValueError, match="7.*bbox_mode"):
        Visualizer(img).draw_dataset_dict(bad)
    mixed = {
        "image_id": 8,
        "annotations": [
            {"bbox": [1, 1, 5, 5], "bbox_mode": 0, "category_id": 0, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"bbox": [1, 1, 5, 5], "bbox_mode": 0, "category_id": 0},
        ],
    }
    with pytest.raises(ValueError, match="annotation 1 lacks 'segmentation'"):
        Visualizer(img).draw_dataset_dict(mixed)


def test_draw_dataset_dict_sem_seg_from_file(tmp_path):
    img = flat()
    seg = np.zeros((H, W), dtype=np.uint8)
    seg[:, 64:] = 1
    path = tmp_path / "seg.png"
    Image.fromarray(seg).save(path)
    out = Visualizer(img, meta(**SEG_META)).draw_dataset_dict({"sem_seg_file_name": str(path)}).get_image()
    out = out.astype(int)
    left, right = out[5:30, 5:40].reshape(-1, 3), out[5:30, 70:120].reshape(-1, 3)
    assert (left[:, 0] > left[:, 2] + 40).mean() > 0.9 and (right[:, 2] > right[:, 0] + 40).mean() > 0.9


def test_visimage_direct_use():
    v = VisImage(flat(40, 50), scale=2.0)
    assert v.get_image().shape == (80, 100, 3)


def test_empty_predictions_draw_nothing():
    img = flat()
    np.testing.assert_array_equal(Visualizer(img).draw_instance_predictions(Instances((H, W))).get_image(), img)
    empty = make_predictions(np.zeros((0, 4)), [], [], masks=None)
    np.testing.assert_array_equal(Visualizer(img, meta()).draw_instance_predictions(empty).get_image(), img)
    np.testing.assert_array_equal(Visualizer(img).draw_dataset_dict({"annotations": []}).get_image(), img)


def test_metadata_as_dict_and_catalog_metadata():
    img = flat()
    pred = make_predictions([[10, 20, 110, 80]], [0], [0.9])
    out_dict = Visualizer(img, {"thing_classes": ["zebra"]}).draw_instance_predictions(pred).get_image()
    out_ns = Visualizer(img, meta(thing_classes=["zebra"])).draw_instance_predictions(pred).get_image()
    np.testing.assert_array_equal(out_dict, out_ns)
    from libdet.data.catalog import Metadata

    md = Metadata(name="vis_test").set(thing_classes=["zebra"])
    np.testing.assert_array_equal(Visualizer(img, md).draw_instance_predictions(pred).get_image(), out_ns)
