"""Augmentations keep image, boxes, polygons, masks, sem-seg and keypoints in agreement."""

import numpy as np
import pytest

import libdet.data.transforms as T
from libdet.data import detection_utils as utils
from libdet.structures import polygons_to_bitmask

H, W = 96, 128
# A convex-ish instance well inside the image.
POLY = np.array([40.0, 30.0, 90.0, 28.0, 100.0, 60.0, 70.0, 75.0, 38.0, 62.0])


def _scene():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 255, size=(H, W, 3)).astype(np.uint8)
    mask = polygons_to_bitmask([POLY], H, W).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    box = np.array([[POLY[0::2].min(), POLY[1::2].min(), POLY[0::2].max(), POLY[1::2].max()]])
    return image, mask, box


AUGS = {
    "hflip": lambda: T.RandomFlip(prob=1.0),
    "vflip": lambda: T.RandomFlip(prob=1.0, horizontal=False, vertical=True),
    "resize": lambda: T.Resize((64, 80)),
    "resize_shortest_range": lambda: T.ResizeShortestEdge((48, 80), 100, "range"),
    "resize_shortest_choice": lambda: T.ResizeShortestEdge((50, 72), sample_style="choice"),
    "resize_scale": lambda: T.ResizeScale(0.5, 1.5, 96, 128),
    "random_resize": lambda: T.RandomResize([(50, 70), (80, 60)]),
    "fixed_crop": lambda: T.FixedSizeCrop((64, 64)),
    "fixed_crop_pad": lambda: T.FixedSizeCrop((128, 160)),
    "crop_relative": lambda: T.RandomCrop("relative", (0.8, 0.8)),
    "crop_relative_range": lambda: T.RandomCrop("relative_range", (0.6, 0.6)),
    "crop_absolute": lambda: T.RandomCrop("absolute", (70, 90)),
    "crop_absolute_range": lambda: T.RandomCrop("absolute_range", (60, 90)),
    "extent": lambda: T.RandomExtent((0.8, 1.2), (0.2, 0.2)),
    "rotation_expand": lambda: T.RandomRotation([-30, 30]),
    "rotation_no_expand": lambda: T.RandomRotation([-30, 30], expand=False),
    "rotation_90": lambda: T.RandomRotation([90], sample_style="choice"),
    "rotation_center": lambda: T.RandomRotation([10, 20], expand=False, center=[(0.4, 0.4), (0.6, 0.6)]),
    "min_iou_crop": lambda: T.MinIoURandomCrop(min_ious=(0.3,), min_crop_size=0.5),
    "random_apply": lambda: T.RandomApply(T.RandomFlip(prob=1.0), prob=1.0),
    "list": lambda: T.AugmentationList(
        [T.ResizeShortestEdge(80, 120), T.RandomFlip(prob=1.0), T.RandomCrop("absolute", (60, 60))]
    ),
}


@pytest.mark.parametrize("name", sorted(AUGS))
def test_geometry_agreement(name):
    image, mask, box = _scene()
    np.random.seed(3)
    aug = AUGS[name]()
    aug_input = T.AugInput(image, boxes=box.copy(), sem_seg=mask.copy())
    tfm = aug(aug_input)
    new_img, new_mask = aug_input.image, aug_input.sem_seg
    oh, ow = new_img.shape[:2]
    assert new_mask.shape == (oh, ow)
    seg = new_mask == 1  # FixedSizeCrop pads sem_seg with 255

    # polygon -> transformed polygon -> raster, vs transformed mask
    polys = tfm.apply_polygons([POLY.reshape(-1, 2)])
    rendered = polygons_to_bitmask([p.reshape(-1) for p in polys], oh, ow) if polys else np.zeros((oh, ow), bool)
    union = (rendered | seg).sum()
    assert seg.sum() > 50 and rendered.sum() > 50, name
    iou = (rendered & seg).sum() / union
    assert iou > 0.85, (name, iou)

    # the RLE path (bitmask annotations) lands on the same mask
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    anno = {"bbox": box[0].tolist(), "bbox_mode": 0, "segmentation": rle, "category_id": 0}
    anno = utils.transform_instance_annotations(anno, tfm, (oh, ow))
    assert (anno["segmentation"] == 1).sum() == seg.sum()

    # box: the transformed box contains the transformed mask; for axis-preserving transforms it is tight
    x0, y0, x1, y1 = aug_input.boxes[0]
    ys, xs = np.nonzero(seg)
    assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) and ys.min() >= np.floor(y0) - 1
    assert ys.max() <= np.ceil(y1)
    if "rotation" not in name:
        clipped = np.clip([x0, y0, x1, y1], 0, [ow, oh, ow, oh])
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(clipped - tight).max() <= 3.0, (name, clipped, tight)

    # keypoint inside the object stays inside the transformed object
    kp = np.array([[68.0, 50.0]])
    assert mask[50, 68] == 1
    kx, ky = tfm.apply_coords(kp.copy())[0]
    assert seg[int(ky), int(kx)], (name, kx, ky)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "lighting"])
def test_color_augmentations_change_pixels_only(name):
    image, mask, box = _scene()
    np.random.seed(0)
    aug = {
        "brightness": T.RandomBrightness(0.5, 0.6),
        "contrast": T.RandomContrast(0.5, 0.6),
        "saturation": T.RandomSaturation(0.2, 0.3),
        "lighting": T.RandomLighting(5.0),
    }[name]
    image = image.astype(np.float32) + 1.0
    aug_input = T.AugInput(image, boxes=box.copy(), sem_seg=mask.copy())
    aug(aug_input)
    assert aug_input.image.shape == image.shape
    assert not np.allclose(aug_input.image, image)
    np.testing.assert_array_equal(aug_input.sem_seg, mask)
    np.testing.assert_allclose(aug_input.boxes, box)
    if name == "brightness":
        np.testing.assert_allclose(aug_input.image / image, aug_input.image.flat[0] / image.flat[0], rtol=1e-4)


def test_flip_twice_is_identity_with_keypoint_flip_map():
    kps = np.array([10.0, 20.0, 2, 50.0, 22.0, 2, 30.0, 40.0, 1])  # left_eye, right_eye, nose
    flip_indices = np.array([1, 0, 2])
    flip = T.HFlipTransform(W)
    once = utils.transform_keypoint_annotations(kps, [flip], (H, W), flip_indices)
    # left/right swapped: the new "left_eye" is the mirrored old right_eye
    np.testing.assert_allclose(once[0], [W - 50.0, 22.0, 2])
    np.testing.assert_allclose(once[1], [W - 10.0, 20.0, 2])
    np.testing.assert_allclose(once[2], [W - 30.0, 40.0, 1])
    twice = utils.transform_keypoint_annotations(kps, [flip, flip], (H, W), flip_indices)
    np.testing.assert_allclose(twice, kps.reshape(-1, 3))
    image, mask, _ = _scene()
    np.testing.assert_array_equal(flip.apply_image(flip.apply_image(image)), image)
    with pytest.raises(ValueError, match="keypoint_hflip_indices"):
        utils.transform_keypoint_annotations(kps, [flip], (H, W), None)


def test_keypoints_outside_become_invisible():
    kps = np.array([5.0, 5.0, 2, 60.0, 50.0, 2])
    crop = T.CropTransform(20, 20, 60, 50)
    out = utils.transform_keypoint_annotations(kps, [crop], (50, 60))
    np.testing.assert_allclose(out[0], [0, 0, 0])
    np.testing.assert_allclose(out[1], [40.0, 30.0, 2])


def test_rotation_coords_match_image_and_inverse():
    image = np.zeros((H, W), dtype=np.uint8)
    image[20:23, 30:33] = 255  # a 3x3 blob centred at (31.5, 21.5)
    for angle, expand in [(30.0, True), (-75.0, True), (45.0, False), (90.0, True)]:
        t = T.RotationTransform(H, W, angle, expand=expand)
        rotated = t.apply_image(image)
        assert rotated.shape == (t.bound_h, t.bound_w)
        ys, xs = np.nonzero(rotated > 100)
        centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        expected = t.apply_coords(np.array([[31.5, 21.5]]))[0]
        assert np.abs(centre - expected).max() < 1.0, (angle, centre, expected)
        if expand:
            back = t.inverse().apply_coords(t.apply_coords(np.array([[31.5, 21.5], [100.0, 80.0]])))
            np.testing.assert_allclose(back, [[31.5, 21.5], [100.0, 80.0]], atol=1.0)
    # float images keep their dtype and multi-channel shape
    f = np.random.rand(H, W, 4).astype(np.float32)
    out = T.RotationTransform(H, W, 20).apply_image(f)
    assert out.dtype == np.float32 and out.shape[2] == 4


def test_resize_transform_dtypes_and_inverse():
    t = T.ResizeTransform(H, W, 48, 64)
    u8 = np.random.randint(0, 255, size=(H, W, 3)).astype(np.uint8)
    assert t.apply_image(u8).shape == (48, 64, 3) and t.apply_image(u8).dtype == np.uint8
    assert t.apply_image(u8[:, :, :1]).shape == (48, 64, 1)
    f = np.full((H, W, 2), 0.25, dtype=np.float32)
    out = t.apply_image(f)
    assert out.shape == (48, 64, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    seg = np.zeros((H, W), np.uint8)
    seg[:, W // 2 :] = 7
    assert set(np.unique(t.apply_segmentation(seg)).tolist()) == {0, 7}
    pts = np.array([[10.0, 20.0]])
    np.testing.assert_allclose(t.inverse().apply_coords(t.apply_coords(pts)), pts)
    with pytest.raises(ValueError, match="does not match"):
        t.apply_image(np.zeros((10, 10, 3), np.uint8))


def test_rotated_box_flip_and_resize():
    rb = np.array([[30.0, 40.0, 20.0, 10.0, 30.0]])
    flipped = T.HFlipTransform(W).apply_rotated_box(rb)
    np.testing.assert_allclose(flipped, [[W - 30.0, 40.0, 20.0, 10.0, -30.0]])
    np.testing.assert_allclose(T.HFlipTransform(W).apply_rotated_box(flipped), rb)
    resized = T.ResizeTransform(H, W, H * 2, W * 2).apply_rotated_box(rb)
    np.testing.assert_allclose(resized, [[60.0, 80.0, 40.0, 20.0, 30.0]], atol=1e-9)
    np.testing.assert_allclose(T.NoOpTransform().apply_rotated_box(rb), rb)


def test_resize_shortest_edge_sizes():
    assert T.ResizeShortestEdge.get_output_shape(480, 640, 800, 1333) == (800, 1067)
    assert T.ResizeShortestEdge.get_output_shape(100, 1000, 800, 1333) == (133, 1333)
    assert T.ResizeShortestEdge.get_output_shape(640, 480, 600, 10**9) == (800, 600)
    img = np.zeros((60, 90, 3), np.uint8)
    np.random.seed(0)
    seen = set()
    for _ in range(30):
        t = T.ResizeShortestEdge((40, 50, 70), sample_style="choice").get_transform(img)
        seen.add(t.new_h)
        assert t.new_w == int(t.new_h * 1.5 + 0.5)
    assert seen == {40, 50, 70}
    for _ in range(20):
        t = T.ResizeShortestEdge((40, 44), max_size=60, sample_style="range").get_transform(img)
        assert 40 * 0 <= t.new_h <= 44 and max(t.new_h, t.new_w) <= 60
    with pytest.raises(ValueError, match="sample_style"):
        T.ResizeShortestEdge((1, 2, 3), sample_style="range")


def test_category_area_constraint_crop():
    image = np.zeros((64, 64, 3), np.uint8)
    sem = np.zeros((64, 64), np.uint8)
    sem[:, 32:] = 1
    sem[:8, :8] = 255
    np.random.seed(1)
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (32, 32), single_category_max_area=0.7, ignored_category=255)
    for _ in range(5):
        inp = T.AugInput(image, sem_seg=sem)
        aug(inp)
        labels, cnt = np.unique(inp.sem_seg[inp.sem_seg != 255], return_counts=True)
        assert len(labels) == 2 and cnt.max() < 0.7 * cnt.sum()


def test_augmentation_input_args_and_errors():
    class NeedsBoxes(T.Augmentation):
        def get_transform(self, image, boxes):
            return T.HFlipTransform(image.shape[1])

    image = np.zeros((8, 10, 3), np.uint8)
    inp = T.AugInput(image, boxes=np.array([[0.0, 0.0, 2.0, 2.0]]))
    NeedsBoxes()(inp)
    np.testing.assert_allclose(inp.boxes, [[8.0, 0.0, 10.0, 2.0]])

    class NeedsFoo(T.Augmentation):
        def get_transform(self, image, foo):
            return T.NoOpTransform()

    with pytest.raises(AttributeError, match="foo"):
        NeedsFoo()(T.AugInput(image))
    with pytest.raises(TypeError, match="uint8"):
        T.AugInput(np.zeros((4, 4), np.int32))
    img2, tfms = T.apply_augmentations([T.Resize((4, 5))], image)
    assert img2.shape == (4, 5, 3) and len(tfms) == 1
    assert T.apply_transform_gens is T.apply_augmentations and T.TransformGen is T.Augmentation
    assert "ResizeShortestEdge" in repr(T.ResizeShortestEdge(10, 20))


def test_augmentations_are_reproducible_with_numpy_seed():
    image, mask, box = _scene()
    aug = T.AugmentationList(
        [T.RandomCrop("relative_range", (0.5, 0.5)), T.RandomRotation([-20, 20]), T.RandomBrightness(0.8, 1.2)]
    )
    outs = []
    for _ in range(2):
        np.random.seed(11)
        inp = T.AugInput(image.copy())
        aug(inp)
        outs.append(inp.image)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_extent_and_pil_color_transforms():
    from PIL import ImageOps

    image, _, _ = _scene()
    t = T.ExtentTransform((-10, -10, W + 10, H + 10), (H + 20, W + 20))
    out = t.apply_image(image)
    assert out.shape == (H + 20, W + 20, 3)
    assert (out[:5, :5] == 0).all()  # filled outside the source
    np.testing.assert_allclose(t.apply_coords(np.array([[0.0, 0.0]])), [[10.0, 10.0]])
    inv = T.PILColorTransform(ImageOps.invert).apply_image(image)
    np.testing.assert_array_equal(inv, 255 - image)
    c = T.ColorTransform(lambda x: x * 0)
    assert (c.apply_image(image) == 0).all() and isinstance(c.inverse(), T.NoOpTransform)
    with pytest.raises(TypeError):
        T.ColorTransform(3)


def test_fvcore_transforms_reexported():
    import fvcore.transforms.transform as ft

    for name in [
        "GridSampleTransform",
        "BlendTransform",
        "CropTransform",
        "PadTransform",
        "ScaleTransform",
        "Transform",
        "TransformList",
        "HFlipTransform",
        "VFlipTransform",
        "NoOpTransform",
    ]:
        assert getattr(T, name) is getattr(ft, name)


def test_min_iou_crop_patch_iou():
    from libdet.data.transforms.augmentation_impl import _patch_iou

    patch = np.array([0, 0, 10, 10])
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(_patch_iou(patch, boxes), [1.0, 1.0 / 3.0, 0.0])


def test_resize_of_a_channel_reversed_view_equals_resize_of_its_copy():
    from PIL import Image

    rgb = np.random.RandomState(0).randint(0, 255, (30, 40, 3)).astype(np.uint8)
    bgr_view = rgb[:, :, ::-1]  # what read_image(format="BGR") returns
    tfm = T.ResizeTransform(30, 40, 45, 50)
    got = tfm.apply_image(bgr_view)
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(bgr_view)).resize((50, 45), Image.BILINEAR))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(tfm.apply_image(np.ascontiguousarray(bgr_view)), expected)
