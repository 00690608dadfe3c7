import numpy as np
import pytest
import torch
from PIL import Image

import libdet.data.transforms as T
from libdet.data import MetadataCatalog
from libdet.data import detection_utils as utils
from libdet.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks


def _write(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_read_image_formats(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    rgb[..., 2] = 50
    f = _write(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(utils.read_image(f), rgb)
    np.testing.assert_array_equal(utils.read_image(f, "RGB"), rgb)
    np.testing.assert_array_equal(utils.read_image(f, "BGR"), rgb[:, :, ::-1])
    gray = utils.read_image(f, "L")
    assert gray.shape == (20, 30, 1) and gray.dtype == np.uint8
    assert abs(int(gray[0, 0, 0]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1
    yuv = utils.read_image(f, "YUV-BT.601")
    assert yuv.dtype == np.float64
    np.testing.assert_allclose(yuv[0, 0, 0], (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, atol=1e-6)
    for fmt in ["BGR", "YUV-BT.601", "L", "RGB"]:
        back = utils.convert_image_to_rgb(utils.read_image(f, fmt), fmt)
        assert back.dtype == np.uint8 and back.shape == (20, 30, 3)
        if fmt != "L":
            np.testing.assert_allclose(back.astype(int), rgb.astype(int), atol=1)


def test_read_image_applies_exif_orientation(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # h=20, w=40
    stored[:, :20] = (255, 0, 0)  # left half red
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = str(tmp_path / "exif.jpg")
    img.save(path, exif=exif.tobytes(), quality=95)
    out = utils.read_image(path, "RGB")
    assert out.shape == (40, 20, 3)
    assert out[:15, :, 0].mean() > 200 and out[:15, :, 1].mean() < 40  # left became top
    assert out[25:, :, 0].mean() < 40


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        utils.read_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(OSError, match="corrupt.jpg"):
        utils.read_image(str(bad))


def test_check_image_size():
    image = np.zeros((10, 20, 3), np.uint8)
    d = {"file_name": "x.jpg"}
    utils.check_image_size(d, image)
    assert d["width"] == 20 and d["height"] == 10
    with pytest.raises(utils.SizeMismatchError, match=r"x\.jpg.*\(20, 10\).*\(21, 10\)"):
        utils.check_image_size({"file_name": "x.jpg", "width": 21, "height": 10}, image)


def test_transform_instance_annotations_boxes_polygons():
    anno = {
        "bbox": [10, 20, 30, 10],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 1,
        "segmentation": [[10, 20, 40, 20, 40, 30, 10, 30]],
    }
    tfms = T.TransformList([T.HFlipTransform(100), T.ResizeTransform(50, 100, 100, 200)])
    out = utils.transform_instance_annotations(anno, tfms, (100, 200))
    np.testing.assert_allclose(out["bbox"], [120, 40, 180, 60])
    assert out["bbox_mode"] == BoxMode.XYXY_ABS
    np.testing.assert_allclose(np.sort(out["segmentation"][0][0::2]), [120, 120, 180, 180])
    # boxes are clipped to the image
    anno = {"bbox": [-5, -5, 500, 500], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    out = utils.transform_instance_annotations(anno, [T.NoOpTransform()], (50, 60))
    np.testing.assert_allclose(out["bbox"], [0, 0, 60, 50])
    with pytest.raises(TypeError, match="segmentation"):
        utils.transform_instance_annotations(
            {"bbox": [0, 0, 1, 1], "bbox_mode": 0, "segmentation": 3}, [T.NoOpTransform()], (5, 5)
        )


def test_rotated_annotations():
    anno = {"bbox": [30, 20, 10, 6, 30.0], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 2}
    out = utils.transform_instance_annotations(anno, [T.HFlipTransform(100)], (50, 100))
    np.testing.assert_allclose(out["bbox"], [70, 20, 10, 6, -30.0])
    inst = utils.annotations_to_instances_rotated([out], (50, 100))
    assert inst.gt_boxes.tensor.shape == (1, 5) and inst.gt_classes.tolist() == [2]


def test_annotations_to_instances_formats():
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]
    annos = [
        {
            "bbox": [2, 2, 12, 8],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 3,
            "segmentation": poly,
            "keypoints": [3.0, 3.0, 2, 5.0, 5.0, 1],
        },
        {
            "bbox": [0, 0, 30, 30],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 1,
            "segmentation": poly,
            "keypoints": [1.0, 1.0, 2, 0.0, 0.0, 0],
        },
    ]
    inst = utils.annotations_to_instances(annos, (16, 20))
    assert isinstance(inst.gt_masks, PolygonMasks)
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[2, 2, 12, 8], [0, 0, 20, 16]])  # clipped
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [3, 1]
    assert inst.gt_keypoints.tensor.shape == (2, 2, 3)
    bm = utils.annotations_to_instances(annos, (16, 20), mask_format="bitmask")
    assert isinstance(bm.gt_masks, BitMasks) and bm.gt_masks.tensor.shape == (2, 16, 20)
    assert int(bm.gt_masks.tensor[0].sum()) == 60
    rle_anno = {
        "bbox": [0, 0, 2, 2],
        "bbox_mode": 0,
        "category_id": 0,
        "segmentation": {"size": [16, 20], "counts": [0, 4, 316]},
    }
    rle_inst = utils.annotations_to_instances([rle_anno], (16, 20), mask_format="bitmask")
    assert int(rle_inst.gt_masks.tensor.sum()) == 4
    with pytest.raises(ValueError, match="bitmask"):
        utils.annotations_to_instances([rle_anno], (16, 20), mask_format="polygon")
    empty = utils.annotations_to_instances([], (16, 20))
    assert len(empty) == 0 and empty.gt_boxes.tensor.shape == (0, 4)


def test_filter_empty_instances():
    inst = Instances((10, 10))
    inst.gt_boxes = Boxes(torch.tensor([[0, 0, 5, 5], [1, 1, 1, 4], [0, 0, 3, 3.0]]))
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1, :2, :2] = True
    inst.gt_masks = BitMasks(masks)
    out, keep = utils.filter_empty_instances(inst, return_mask=True)
    assert keep.tolist() == [True, False, False] and len(out) == 1
    assert len(utils.filter_empty_instances(inst, by_mask=False)) == 2


def test_keypoint_flip_indices_and_metadata_consistency():
    MetadataCatalog.get("_dutils_kp_a").set(
        keypoint_names=["nose", "left_eye", "right_eye"], keypoint_flip_map=[("left_eye", "right_eye")]
    )
    MetadataCatalog.get("_dutils_kp_b").set(
        keypoint_names=["nose", "left_eye", "right_eye"], keypoint_flip_map=[("left_eye", "right_eye")]
    )
    MetadataCatalog.get("_dutils_kp_c").set(
        keypoint_names=["nose", "right_eye", "left_eye"], keypoint_flip_map=[("left_eye", "right_eye")]
    )
    assert utils.create_keypoint_hflip_indices(["_dutils_kp_a", "_dutils_kp_b"]).tolist() == [0, 2, 1]
    assert utils.create_keypoint_hflip_indices(MetadataCatalog.get("_dutils_kp_a")).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="_dutils_kp_c.*keypoint_names|keypoint_names.*_dutils_kp_c"):
        utils.create_keypoint_hflip_indices(["_dutils_kp_a", "_dutils_kp_c"])


def test_fed_loss_weights():
    dicts = [
        {"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
        {"annotations": [{"category_id": 2}]},
        {"annotations": [{"category_id": 1, "iscrowd": 1}]},
    ]
    w = utils.get_fed_loss_cls_weights(dicts, 0.5, num_classes=4)
    np.testing.assert_allclose(w.numpy(), [1.0, 0.0, np.sqrt(2.0), 0.0])
    MetadataCatalog.get("_dutils_lvis").set(
        class_image_count=[{"id": 2, "image_count": 9}, {"id": 1, "image_count": 4}]
    )
    np.testing.assert_allclose(utils.get_fed_loss_cls_weights("_dutils_lvis", 0.5).numpy(), [2.0, 3.0])


def test_gen_crop_transform_with_instance():
    np.random.seed(0)
    inst = {"bbox": [40, 30, 10, 10], "bbox_mode": BoxMode.XYWH_ABS}
    for _ in range(20):
        crop = utils.gen_crop_transform_with_instance((20, 30), (64, 96), inst)
        assert crop.w == 30 and crop.h == 20
        assert crop.x0 <= 45 <= crop.x0 + 30 and crop.y0 <= 35 <= crop.y0 + 20
        assert crop.x0 + 30 <= 96 and crop.y0 + 20 <= 64


def test_build_augmentation():
    train = utils.build_augmentation(is_train=True, min_size=(64, 80), max_size=100, sample_style="choice")
    assert isinstance(train[0], T.ResizeShortestEdge) and isinstance(train[1], T.RandomFlip)
    assert train[0].short_edge_length == (64, 80) and train[0].max_size == 100
    assert len(utils.build_augmentation(is_train=True, random_flip="none")) == 1
    test = utils.build_augmentation(is_train=False, min_size=72)
    assert len(test) == 1 and test[0].short_edge_length == (72, 72)
    with pytest.raises(ValueError, match="range"):
        utils.build_augmentation(is_train=True, min_size=(1, 2, 3), sample_style="range")


def test_transform_proposals():
    d = {
        "proposal_boxes": np.array([[0, 0, 10, 10], [5, 5, 5, 5], [0, 0, 4, 4.0]]),
        "proposal_objectness_logits": np.array([3.0, 2.0, 1.0]),
        "proposal_bbox_mode": BoxMode.XYXY_ABS,
    }
    utils.transform_proposals(d, (20, 20), T.TransformList([T.ResizeTransform(10, 10, 20, 20)]), proposal_topk=5)
    p = d["proposals"]
    np.testing.assert_allclose(p.proposal_boxes.tensor.numpy(), [[0, 0, 20, 20], [0, 0, 8, 8]])
    np.testing.assert_allclose(p.objectness_logits.numpy(), [3.0, 1.0])


def _random_annotations(rng, count):
    annos = []
    for i in range(count):
        x, y, w, h = (float(v) for v in rng.uniform(0, 60, 4).round(3))
        box = [x, y, w, h] if i % 3 else [int(x), int(y), int(w), int(h)]  # float and int boxes
        mode = BoxMode.XYXY_ABS if i % 4 == 3 else BoxMode.XYWH_ABS
        if mode == BoxMode.XYXY_ABS:
            box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        anno = {"bbox": box, "bbox_mode": mode, "category_id": 0}
        if i % 5:
            anno["segmentation"] = [rng.uniform(0, 80, 2 * n).tolist() for n in range(3, 3 + i % 3)]
        annos.append(anno)
    return annos


@pytest.mark.parametrize("flip", [False, True])
def test_batched_annotation_transform_equals_per_annotation(flip):
    import copy

    rng = np.random.RandomState(0)
    annos = _random_annotations(rng, 12)
    tfms = [T.ResizeTransform(64, 80, 101, 127)] + ([T.HFlipTransform(127)] if flip else [])
    transforms = T.TransformList(tfms)
    expected = [utils.transform_instance_annotations(a, transforms, (101, 127)) for a in copy.deepcopy(annos)]
    got = copy.deepcopy(annos)
    assert utils._transform_plain_annotations(got, transforms, (101, 127))
    for e, g in zip(expected, got):
        assert g["bbox_mode"] == e["bbox_mode"] == BoxMode.XYXY_ABS
        np.testing.assert_array_equal(np.asarray(g["bbox"], dtype=np.float64), e["bbox"])
        assert ("segmentation" in g) == ("segmentation" in e)
        for pg, pe in zip(g.get("segmentation", []), e.get("segmentation", [])):
            np.testing.assert_array_equal(pg, pe)
        assert len(g.get("segmentation", [])) == len(e.get("segmentation", []))


def test_batched_annotation_transform_declines_what_it_does_not_cover():
    annos = _random_annotations(np.random.RandomState(1), 3)
    crop = T.TransformList([T.CropTransform(0, 0, 30, 30)])  # crops polygons with its own apply_polygons
    before = [dict(a) for a in annos]
    assert not utils._transform_plain_annotations(annos, crop, (30, 30))
    assert annos == before
    resize = T.TransformList([T.ResizeTransform(64, 80, 32, 40)])
    with_keypoints = [dict(annos[0], keypoints=[1.0, 2.0, 2])]
    assert not utils._transform_plain_annotations(with_keypoints, resize, (32, 40))
    numpy_box = [dict(annos[0], bbox=np.array([1.0, 2.0, 3.0, 4.0]))]
    assert not utils._transform_plain_annotations(numpy_box, resize, (32, 40))
