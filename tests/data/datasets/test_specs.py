"""Dataset specs (coco:/lvis:/voc:/yolo:) accepted wherever a registered dataset name is."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from libdet.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from libdet.data.datasets import load_yolo_instances, parse_dataset_spec
from libdet.data.datasets.specs import DatasetSpec
from libdet.data.errors import AnnotationError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_CACHE", str(tmp_path / "cache"))
    before = set(DatasetCatalog.keys())
    yield
    for name in set(DatasetCatalog.keys()) - before:
        DatasetCatalog.remove(name)
        if name in MetadataCatalog.data:
            MetadataCatalog.remove(name)


def _image(path, width=40, height=30):
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)
    return str(path)


def test_parse():
    assert parse_dataset_spec("coco:a/b.json@imgs") == DatasetSpec("coco", "a/b.json", "imgs", "", 0.1)
    assert parse_dataset_spec("yolo:data") == DatasetSpec("yolo", "data", "", "", 0.1)
    assert parse_dataset_spec("voc:VOC@test%val:0.25") == DatasetSpec("voc", "VOC", "test", "val", 0.25)
    for bad, message in [
        ("coco:a.json", "coco:<annotations.json>@<image_dir>"),
        ("kitti:x", "kind one of"),
        ("yolo:d%test", "'train' or 'val'"),
        ("yolo:d%val:1.5", r"in \(0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_dataset_spec(bad)


def _yolo(tmp_path, lines_by_image, names=("cat", "dog")):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for stem, lines in lines_by_image.items():
        _image(root / "images" / f"{stem}.png")
        if lines is not None:
            (root / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_yolo_boxes_polygons_and_images_without_labels(tmp_path):
    root = _yolo(tmp_path, {"a": ["1 0.5 0.5 0.5 0.2", "0 0.1 0.1 0.5 0.1 0.5 0.5"], "b": None})
    dicts = load_yolo_instances(str(root))
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["a.png", "b.png"]
    box, polygon = dicts[0]["annotations"]
    assert box["category_id"] == 1 and box["bbox"] == pytest.approx([10, 12, 30, 18])  # 40 x 30 image
    assert polygon["segmentation"] == [pytest.approx([4, 3, 20, 3, 20, 15])]
    assert polygon["bbox"] == pytest.approx([4, 3, 20, 15])
    assert dicts[1]["annotations"] == []


def test_yolo_errors_name_the_file_and_line(tmp_path):
    root = _yolo(tmp_path, {"a": ["0 0.5 0.5 0.1 0.1", "2 0.5 0.5 0.1 0.1"]})
    with pytest.raises(AnnotationError, match=r"a.txt:2: class 2 is outside the 2 class names"):
        load_yolo_instances(str(root))
    os.remove(root / "classes.txt")
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        DatasetCatalog.get(f"yolo:{root}")


def test_yolo_spec_registers_itself_with_classes_and_a_coco_json(tmp_path):
    root = _yolo(tmp_path, {"a": ["1 0.5 0.5 0.5 0.2"], "b": ["0 0.5 0.5 0.2 0.2"]})
    spec = f"yolo:{root}"
    assert spec in DatasetCatalog
    meta = MetadataCatalog.get(spec)
    assert meta.thing_classes == ["cat", "dog"] and meta.evaluator_type == "coco"
    with open(meta.json_file) as f:
        coco = json.load(f)
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 2
    assert len(get_detection_dataset_dicts(spec)) == 2


def test_voc_spec_takes_class_names_from_the_annotations(tmp_path):
    root = tmp_path / "VOC"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for stem, name in (("0001", "zebra"), ("0002", "ant")):
        _image(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>40</width><height>30</height></size><object><name>{name}</name>"
            "<difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox>"
            "</object></annotation>"
        )
    (root / "ImageSets/Main/train.txt").write_text("0001\n0002\n")
    spec = f"voc:{root}@train"
    dicts = DatasetCatalog.get(spec)
    assert MetadataCatalog.get(spec).thing_classes == ["ant", "zebra"]
    assert [d["annotations"][0]["category_id"] for d in dicts] == [1, 0]


def test_coco_spec_train_val_split_is_complementary_and_stable(tmp_path):
    images, annotations = [], []
    for i in range(40):
        images.append(
            {"id": i + 1, "file_name": os.path.basename(_image(tmp_path / f"{i}.png")), "height": 30, "width": 40}
        )
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [1, 1, 10, 10], "iscrowd": 0})
    json_file = tmp_path / "all.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "thing"}]})
    )
    base = f"coco:{json_file}@{tmp_path}"
    train = {d["file_name"] for d in DatasetCatalog.get(base + "%train:0.25")}
    val = {d["file_name"] for d in DatasetCatalog.get(base + "%val:0.25")}
    assert train.isdisjoint(val) and len(train | val) == 40 and 3 <= len(val) <= 18
    assert val == {d["file_name"] for d in DatasetCatalog.get(base + "%val:0.25")}
    assert MetadataCatalog.get(base + "%val:0.25").thing_classes == ["thing"]
    assert MetadataCatalog.get(base + "%val:0.25").json_file == str(json_file)


def test_names_that_are_not_specs_are_untouched():
    assert "no_such_dataset" not in DatasetCatalog
    assert "odd:name" not in DatasetCatalog  # an unknown kind is just an unregistered name
    with pytest.raises(FileNotFoundError, match="missing.json"):
        DatasetCatalog.get("coco:missing.json@images")
    assert "coco:missing.json@images" not in DatasetCatalog.data  # nothing half-registered
