"""Cityscapes panoptic loader on a two-image tree in cityscapesscripts' layout."""

import json

import numpy as np
import pytest
from PIL import Image

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets.cityscapes_panoptic import (
    get_cityscapes_panoptic_meta,
    load_cityscapes_panoptic,
    register_all_cityscapes_panoptic,
)


def _tree(root, stems=("aachen_000000_000019", "aachen_000001_000019"), category=26):
    img_dir = root / "cityscapes/leftImg8bit/train"
    gt_split = root / "cityscapes/gtFine/train"
    pan_dir = root / "cityscapes/gtFine/cityscapes_panoptic_train"
    for d in (img_dir / "aachen", gt_split / "aachen", pan_dir):
        d.mkdir(parents=True, exist_ok=True)
    annotations = []
    for i, stem in enumerate(stems):
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(img_dir / "aachen" / f"{stem}_leftImg8bit.png")
        Image.fromarray(np.zeros((8, 16), np.uint8)).save(gt_split / "aachen" / f"{stem}_gtFine_labelTrainIds.png")
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(pan_dir / f"{stem}_gtFine_panoptic.png")
        annotations.append(
            {
                "image_id": stem,
                "file_name": f"{stem}_gtFine_panoptic.png",
                "segments_info": [
                    {"id": 7, "category_id": 7, "iscrowd": 0, "area": 64, "bbox": [0, 0, 8, 8]},
                    {
                        "id": category * 1000 + i + 1,
                        "category_id": category,
                        "iscrowd": 0,
                        "area": 4,
                        "bbox": [1, 1, 2, 2],
                    },
                ],
            }
        )
    gt_json = root / "cityscapes/gtFine/cityscapes_panoptic_train.json"
    gt_json.write_text(json.dumps({"annotations": annotations, "categories": []}))
    return str(img_dir), str(pan_dir), str(gt_json)


def test_meta_maps_label_ids_to_train_ids():
    meta = get_cityscapes_panoptic_meta()
    assert meta["stuff_dataset_id_to_contiguous_id"][7] == 0  # road
    assert meta["thing_dataset_id_to_contiguous_id"][26] == 13  # car
    assert meta["thing_dataset_id_to_contiguous_id"][33] == 18  # bicycle
    assert len(meta["thing_dataset_id_to_contiguous_id"]) == 8 and len(meta["stuff_dataset_id_to_contiguous_id"]) == 11
    assert meta["thing_classes"][13] == "car" and meta["stuff_colors"][0] == [128, 64, 128]


def test_meta_agrees_with_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels", reason="cityscapesscripts not installed").labels
    meta = get_cityscapes_panoptic_meta()
    expected_things = {lab.id: lab.trainId for lab in labels if lab.trainId not in (255, -1) and lab.hasInstances}
    expected_stuff = {lab.id: lab.trainId for lab in labels if lab.trainId not in (255, -1) and not lab.hasInstances}
    assert meta["thing_dataset_id_to_contiguous_id"] == expected_things
    assert meta["stuff_dataset_id_to_contiguous_id"] == expected_stuff


def test_load(tmp_path):
    image_dir, gt_dir, gt_json = _tree(tmp_path)
    dicts = load_cityscapes_panoptic(image_dir, gt_dir, gt_json, get_cityscapes_panoptic_meta())
    assert len(dicts) == 2
    d = dicts[0]
    assert d["image_id"] == "aachen_000000_000019"
    assert d["file_name"].endswith("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    assert d["sem_seg_file_name"].endswith("gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png")
    assert d["pan_seg_file_name"].endswith("cityscapes_panoptic_train/aachen_000000_000019_gtFine_panoptic.png")
    assert [s["category_id"] for s in d["segments_info"]] == [0, 13]
    assert d["segments_info"][1]["id"] == 26001


def test_errors_name_the_problem(tmp_path):
    meta = get_cityscapes_panoptic_meta()
    image_dir, gt_dir, gt_json = _tree(tmp_path, category=29)  # caravan: not an evaluation class
    with pytest.raises(ValueError, match="category 29"):
        load_cityscapes_panoptic(image_dir, gt_dir, gt_json, meta)
    with pytest.raises(FileNotFoundError, match="createPanopticImgs"):
        load_cityscapes_panoptic(image_dir, gt_dir, gt_json + ".missing", meta)
    data = json.loads(open(gt_json).read())
    data["annotations"][0]["image_id"] = "bremen_000000_000019"
    with open(gt_json, "w") as f:
        json.dump(data, f)
    with pytest.raises(FileNotFoundError, match="bremen_000000_000019_leftImg8bit.png"):
        load_cityscapes_panoptic(image_dir, gt_dir, gt_json, meta)


def test_registration(tmp_path):
    _tree(tmp_path)
    names = ["cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val"]
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
    try:
        register_all_cityscapes_panoptic(str(tmp_path))
        assert len(DatasetCatalog.get("cityscapes_fine_panoptic_train")) == 2
        meta = MetadataCatalog.get("cityscapes_fine_panoptic_train")
        assert meta.evaluator_type == "cityscapes_panoptic_seg" and meta.label_divisor == 1000
        assert meta.gt_dir.endswith("cityscapes/gtFine/train")
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
        from libdet.data.datasets.builtin import datasets_root

        register_all_cityscapes_panoptic(datasets_root())  # restore the built-in registration
