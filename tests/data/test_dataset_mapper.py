import numpy as np
import pytest
import torch
from PIL import Image

import libdet.data.transforms as T
from libdet.data import DatasetMapper
from libdet.data.detection_utils import SizeMismatchError
from libdet.structures import BitMasks, BoxMode, PolygonMasks, polygons_to_bitmask

H, W = 64, 80
POLY = [20.0, 10.0, 50.0, 10.0, 50.0, 40.0, 20.0, 40.0]


@pytest.fixture()
def record(tmp_path):
    rng = np.random.RandomState(0)
    img = rng.randint(0, 255, (H, W, 3)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    sem = np.zeros((H, W), np.uint8)
    sem[10:40, 20:50] = 3
    Image.fromarray(sem).save(tmp_path / "sem.png")
    return {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "image_id": 7,
        "height": H,
        "width": W,
        "annotations": [
            {
                "bbox": [20, 10, 30, 30],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": [POLY],
                "keypoints": [25.0, 15.0, 2, 45.0, 15.0, 2, 35.0, 35.0, 1],
            },
            {
                "bbox": [0, 0, 10, 10],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0]],
            },
        ],
    }, img


def test_train_polygon_with_flip(record):
    d, img = record
    mapper = DatasetMapper(
        is_train=True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", use_instance_mask=True
    )
    out = mapper(d)
    assert "annotations" not in out and "annotations" in d  # input untouched
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), img[:, ::-1])
    inst = out["instances"]
    assert len(inst) == 1  # crowd dropped
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[W - 50, 10, W - 20, 40]])
    assert inst.gt_classes.tolist() == [2]
    assert isinstance(inst.gt_masks, PolygonMasks)
    sem = out["sem_seg"]
    assert sem.dtype == torch.int64 and sem.shape == (H, W)
    assert (sem == 3).sum() == 900 and sem[20, W - 35] == 3


def test_train_bitmask_keypoints_bgr(record):
    d, img = record
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.Resize((H * 2, W * 2)), T.RandomFlip(prob=1.0)],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
        use_keypoint=True,
        keypoint_hflip_indices=np.array([1, 0, 2]),
    )
    out = mapper(d)
    assert out["image"].shape == (3, H * 2, W * 2)
    inst = out["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (1, H * 2, W * 2)
    flipped = [2 * W - 2 * x if i % 2 == 0 else 2 * x for i, x in enumerate(POLY)]
    expected = polygons_to_bitmask([np.array(flipped)], H * 2, W * 2)
    mask = inst.gt_masks.tensor[0].numpy()
    assert (mask & expected).sum() / (mask | expected).sum() > 0.95
    kp = inst.gt_keypoints.tensor[0].numpy()
    np.testing.assert_allclose(kp, [[2 * W - 90, 30, 2], [2 * W - 50, 30, 2], [2 * W - 70, 70, 1]])


def test_recompute_boxes_after_crop(record):
    d, _ = record
    d["annotations"][0]["bbox"] = [0, 0, W, H]  # deliberately loose box
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.CropTransform(30, 0, 40, 30)],
        image_format="RGB",
        use_instance_mask=True,
        recompute_boxes=True,
    )
    out = mapper(d)
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), [[0, 10, 20, 30]])
    plain = DatasetMapper(
        is_train=True, augmentations=[T.CropTransform(30, 0, 40, 30)], image_format="RGB", use_instance_mask=True
    )(d)
    np.testing.assert_allclose(plain["instances"].gt_boxes.tensor.numpy(), [[0, 0, 40, 30]])
    with pytest.raises(ValueError, match="recompute_boxes"):
        DatasetMapper(is_train=True, augmentations=[], image_format="RGB", recompute_boxes=True)


def test_test_mode_drops_annotations(record):
    d, _ = record
    out = DatasetMapper(is_train=False, augmentations=[T.ResizeShortestEdge(32, 100)], image_format="RGB")(d)
    assert "annotations" not in out and "instances" not in out
    assert out["image"].shape == (3, 32, 40) and out["sem_seg"].shape == (32, 40)
    assert out["height"] == H and out["width"] == W


def test_masks_dropped_without_use_instance_mask(record):
    d, _ = record
    out = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")(d)
    assert not out["instances"].has("gt_masks") and not out["instances"].has("gt_keypoints")


def test_bad_inputs_name_the_file(record, tmp_path):
    d, _ = record
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    with pytest.raises(SizeMismatchError, match="img.png"):
        mapper({**d, "width": W + 1})
    with pytest.raises(FileNotFoundError, match="nope.png"):
        mapper({**d, "file_name": str(tmp_path / "nope.png")})


class _BoxRecorder(T.Augmentation):
    """Records the boxes it is given (after the augmentations before it)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def get_transform(self, image, boxes):
        self.seen.append(None if boxes is None else np.array(boxes))
        return T.NoOpTransform()


def test_box_aware_augmentation_gets_boxes_and_input_is_left_intact(record):
    import copy

    d, _ = record
    snapshot = copy.deepcopy(d)
    recorder = _BoxRecorder()
    mapper = DatasetMapper(
        is_train=True, augmentations=[T.RandomFlip(prob=1.0), recorder], image_format="RGB", use_instance_mask=True
    )
    out = mapper(d)
    # the non-crowd box (XYWH [20, 10, 30, 30]) as XYXY, flipped by the first augmentation
    np.testing.assert_allclose(recorder.seen[-1], [[W - 50, 10, W - 20, 40]])
    assert d == snapshot  # the mapper copies before it edits annotations
    assert len(out["instances"]) == 1
