"""VOC, LVIS, COCO panoptic and Cityscapes loaders on tiny files written by the tests."""

import collections
import json
import os

import numpy as np
import pytest
from PIL import Image

from libdet.data.catalog import DatasetCatalog, MetadataCatalog
from libdet.data.datasets.cityscapes import _load_instances_with_labels, load_cityscapes_semantic
from libdet.data.datasets.coco_panoptic import (
    load_coco_panoptic_json,
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from libdet.data.datasets.lvis import get_lvis_instances_meta, load_lvis_json, register_lvis_instances
from libdet.data.datasets.pascal_voc import load_voc_instances, register_pascal_voc
from libdet.structures import BoxMode


@pytest.fixture
def registered():
    names = []
    yield names
    for n in names:
        DatasetCatalog.pop(n, None)
        MetadataCatalog.pop(n, None)


_VOC_XML = """<annotation><filename>{id}.jpg</filename>
<size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
<object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>64</xmax><ymax>48</ymax></bndbox></object>
</annotation>"""


def _voc(tmp_path, ids=("000001", "000002")):
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for i in ids:
        (root / "Annotations" / f"{i}.xml").write_text(_VOC_XML.format(id=i))
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc(tmp_path, registered):
    root = _voc(tmp_path)
    dicts = load_voc_instances(str(root), "train")
    assert [d["image_id"] for d in dicts] == ["000001", "000002"]
    d = dicts[0]
    assert d["file_name"] == str(root / "JPEGImages" / "000001.jpg") and (d["height"], d["width"]) == (48, 64)
    dog, person = d["annotations"]
    assert dog == {"category_id": 11, "bbox": [4.0, 5.0, 20.0, 30.0], "bbox_mode": BoxMode.XYXY_ABS}
    assert person["category_id"] == 14 and person["bbox"] == [0.0, 0.0, 64.0, 48.0]
    registered.append("t_voc")
    register_pascal_voc("t_voc", str(root), "train", 2007, class_names=["dog", "person"])
    assert DatasetCatalog.get("t_voc")[0]["annotations"][1]["category_id"] == 1
    assert MetadataCatalog.get("t_voc").evaluator_type == "pascal_voc"


def test_voc_errors(tmp_path):
    root = _voc(tmp_path)
    with pytest.raises(ValueError, match=r"000001\.xml.*'person'"):
        load_voc_instances(str(root), "train", ["dog"])
    with pytest.raises(FileNotFoundError, match="val.txt"):
        load_voc_instances(str(root), "val")
    (root / "ImageSets" / "Main" / "train.txt").write_text("000001\n000003\n")
    with pytest.raises(FileNotFoundError, match=r"000003\.xml"):
        load_voc_instances(str(root), "train")


def _lvis_dict():
    return {
        "images": [
            {
                "id": 1,
                "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg",
                "height": 30,
                "width": 40,
                "not_exhaustive_category_ids": [2],
                "neg_category_ids": [1],
            },
            {"id": 2, "file_name": "COCO_val2014_000000000002.jpg", "height": 20, "width": 20},
        ],
        "categories": [
            {"id": 2, "name": "banana", "image_count": 1, "frequency": "r"},
            {"id": 1, "name": "apple", "image_count": 2, "frequency": "c"},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 2,
                "bbox": [1, 1, 5, 5],
                "area": 25,
                "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]],
            },
            {
                "id": 11,
                "image_id": 2,
                "category_id": 1,
                "bbox": [2, 2, 3, 3],
                "area": 9,
                "segmentation": [[2, 2, 5, 2, 5, 5]],
            },
        ],
    }


def test_lvis(tmp_path, registered):
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(_lvis_dict()))
    registered.append("t_lvis")
    dicts = load_lvis_json(str(path), "/coco", "t_lvis")
    assert dicts[0]["file_name"] == os.path.join("/coco", "train2017", "000000000001.jpg")
    assert dicts[1]["file_name"] == os.path.join("/coco", "000000000002.jpg")
    assert dicts[0]["not_exhaustive_category_ids"] == [1] and dicts[0]["neg_category_ids"] == [0]
    a = dicts[0]["annotations"][0]
    assert a["category_id"] == 1 and a["bbox_mode"] == BoxMode.XYWH_ABS and "iscrowd" not in a
    meta = MetadataCatalog.get("t_lvis")
    assert meta.thing_classes == ["apple", "banana"]
    assert meta.class_image_count == [{"id": 1, "image_count": 2}, {"id": 2, "image_count": 1}]
    assert meta.category_frequency == ["c", "r"]
    registered.append("t_lvis2")
    register_lvis_instances("t_lvis2", {}, str(path), "/coco")
    assert get_lvis_instances_meta("t_lvis2")["thing_classes"] == ["apple", "banana"]
    assert len(get_lvis_instances_meta("lvis_v0.5_train_cocofied")["thing_classes"]) == 80
    assert len(DatasetCatalog.get("t_lvis2")) == 2
    bad = _lvis_dict()
    bad["annotations"][1]["image_id"] = 5
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="Annotation id 11.*image id 5"):
        load_lvis_json(str(path), "/coco")


def _panoptic(tmp_path):
    cats = [
        {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
        {"id": 92, "name": "banner", "isthing": 0, "color": [1, 2, 3]},
        {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    ]
    (tmp_path / "images").mkdir()
    (tmp_path / "pan").mkdir()
    (tmp_path / "stuff").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "000001.jpg")
    Image.new("RGB", (8, 6)).save(tmp_path / "pan" / "000001.png")
    Image.new("L", (8, 6)).save(tmp_path / "stuff" / "000001.png")
    pan = {
        "images": [{"id": 1, "file_name": "000001.jpg", "height": 6, "width": 8}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "000001.png",
                "segments_info": [
                    {"id": 5, "category_id": 3, "iscrowd": 0, "bbox": [0, 0, 2, 2], "area": 4},
                    {"id": 6, "category_id": 92, "iscrowd": 0, "bbox": [2, 2, 2, 2], "area": 4},
                ],
            }
        ],
        "categories": cats,
    }
    (tmp_path / "pan.json").write_text(json.dumps(pan))
    inst = {
        "images": pan["images"],
        "categories": [c for c in cats if c["isthing"]],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 0, 2, 2],
                "iscrowd": 0,
                "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
            }
        ],
    }
    (tmp_path / "inst.json").write_text(json.dumps(inst))
    return pan


def test_coco_panoptic(tmp_path, registered):
    _panoptic(tmp_path)
    dicts = load_coco_panoptic_json(str(tmp_path / "pan.json"), str(tmp_path / "images"), str(tmp_path / "pan"))
    assert dicts[0]["file_name"] == str(tmp_path / "images" / "000001.jpg")
    assert dicts[0]["pan_seg_file_name"] == str(tmp_path / "pan" / "000001.png")
    car, banner = dicts[0]["segments_info"]
    # standard format: ids index the full sorted category list [person(1), car(3), banner(92)]
    assert (car["category_id"], car["isthing"], car["id"]) == (1, True, 5)
    assert (banner["category_id"], banner["isthing"]) == (2, False)

    registered += ["t_pan", "t_pan_separated", "t_pan_stuffonly"]
    args = (str(tmp_path / "images"), str(tmp_path / "pan"), str(tmp_path / "pan.json"))
    register_coco_panoptic("t_pan", {}, *args)
    assert DatasetCatalog.get("t_pan")[0]["segments_info"][0]["category_id"] == 1
    meta = MetadataCatalog.get("t_pan")
    assert meta.stuff_classes == ["person", "car", "banner"] and meta.thing_classes == ["person", "car"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1} and meta.thing_colors[1] == [0, 0, 142]
    assert meta.evaluator_type == "coco_panoptic_seg"

    register_coco_panoptic_separated("t_pan", {}, *args, str(tmp_path / "stuff"), str(tmp_path / "inst.json"))
    sep = DatasetCatalog.get("t_pan_separated")
    assert sep[0]["sem_seg_file_name"] == str(tmp_path / "stuff" / "000001.png")
    assert sep[0]["annotations"][0]["category_id"] == 1  # instances: car among things [person, car]
    meta = MetadataCatalog.get("t_pan_separated")
    assert meta.stuff_classes == ["things", "banner"] and meta.stuff_dataset_id_to_contiguous_id == {92: 1}
    assert len(DatasetCatalog.get("t_pan_stuffonly")) == 1


def test_coco_panoptic_unknown_category(tmp_path):
    pan = _panoptic(tmp_path)
    pan["annotations"][0]["segments_info"][1]["category_id"] = 77
    (tmp_path / "pan.json").write_text(json.dumps(pan))
    with pytest.raises(ValueError, match="Segment 6 of image 1.*category_id 77"):
        load_coco_panoptic_json(str(tmp_path / "pan.json"), str(tmp_path / "images"), str(tmp_path / "pan"))


Label = collections.namedtuple("Label", "name id trainId hasInstances ignoreInEval")
# A subset of Cityscapes' label table, enough for the tests (the real one comes from cityscapesscripts).
_LABELS = [
    Label("road", 7, 0, False, False),
    Label("person", 24, 11, True, False),
    Label("car", 26, 13, True, False),
    Label("caravan", 29, 255, True, True),
    Label("license plate", -1, -1, False, True),
]


def _cityscapes(tmp_path):
    img_dir, gt_dir = tmp_path / "leftImg8bit" / "train" / "aachen", tmp_path / "gtFine" / "train" / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    stem = "aachen_000000_000019"
    Image.new("RGB", (16, 12)).save(img_dir / f"{stem}_leftImg8bit.png")
    inst = np.full((12, 16), 7, dtype=np.int32)
    inst[2:5, 3:8] = 26000  # car instance 0
    inst[6:10, 1:4] = 24  # person crowd region
    inst[0:2, 10:14] = 29001  # caravan: ignored in evaluation
    Image.fromarray(inst.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")  # 16-bit like Cityscapes
    polygons = {
        "imgHeight": 12,
        "imgWidth": 16,
        "objects": [
            {"label": "road", "polygon": [[0, 0], [15, 0], [15, 11], [0, 11]]},
            {"label": "car", "polygon": [[2, 2], [9, 2], [9, 6], [2, 6]]},
            {"label": "persongroup", "polygon": [[1, 6], [4, 6], [4, 10], [1, 10]]},
            {"label": "person", "polygon": [[6, 1], [11, 1], [11, 4], [6, 4]]},  # on top of the car
        ],
    }
    (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons))
    return tmp_path / "leftImg8bit" / "train", tmp_path / "gtFine" / "train", gt_dir, stem


def test_cityscapes_instances_png(tmp_path):
    img_dir, gt_root, _, stem = _cityscapes(tmp_path)
    dicts = _load_instances_with_labels(str(img_dir), str(gt_root), _LABELS, from_json=False, to_polygons=False)
    assert len(dicts) == 1 and dicts[0]["image_id"] == stem and (dicts[0]["height"], dicts[0]["width"]) == (12, 16)
    annos = sorted(dicts[0]["annotations"], key=lambda a: a["category_id"])
    # contiguous ids over evaluated instance labels: person 0, car 1
    assert [(a["category_id"], a["iscrowd"]) for a in annos] == [(0, 1), (1, 0)]
    assert annos[1]["bbox"] == [3.0, 2.0, 8.0, 5.0] and annos[1]["bbox_mode"] == BoxMode.XYXY_ABS
    from pycocotools import mask as mask_util

    rle = annos[1]["segmentation"]
    assert mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).sum() == 15
    cv2 = pytest.importorskip("cv2")
    del cv2
    dicts = _load_instances_with_labels(str(img_dir), str(gt_root), _LABELS, from_json=False, to_polygons=True)
    assert all(isinstance(a["segmentation"], list) for a in dicts[0]["annotations"])


def test_cityscapes_instances_json(tmp_path):
    pytest.importorskip("shapely")
    img_dir, gt_root, _, _ = _cityscapes(tmp_path)
    dicts = _load_instances_with_labels(str(img_dir), str(gt_root), _LABELS, from_json=True, to_polygons=True)
    annos = {a["category_id"]: a for a in dicts[0]["annotations"]}
    assert len(dicts[0]["annotations"]) == 3
    person_group = [a for a in dicts[0]["annotations"] if a["iscrowd"]]
    assert len(person_group) == 1 and person_group[0]["category_id"] == 0
    car = annos[1]
    x0, y0, x1, y1 = car["bbox"]
    assert (x0, y0, x1, y1) == pytest.approx((1.5, 1.5, 9.5, 6.5))
    # the person drawn later covers the car's top-right part: the car's polygon excludes it
    from libdet.structures import polygons_to_bitmask

    car_mask = polygons_to_bitmask([np.asarray(p) for p in car["segmentation"]], 12, 16)
    assert not car_mask[2:4, 7:10].any() and car_mask[5, 3:9].all()


def test_cityscapes_semantic(tmp_path):
    img_dir, gt_root, gt_dir, stem = _cityscapes(tmp_path)
    with pytest.raises(FileNotFoundError, match="labelTrainIds.*createTrainIdLabelImgs"):
        load_cityscapes_semantic(str(img_dir), str(gt_root))
    Image.new("L", (16, 12)).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    (d,) = load_cityscapes_semantic(str(img_dir), str(gt_root))
    assert d["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png") and (d["height"], d["width"]) == (12, 16)


def test_cityscapes_instances_public_loader(tmp_path):
    from libdet.data.datasets.builtin_meta import CITYSCAPES_THING_CLASSES
    from libdet.data.datasets.cityscapes import load_cityscapes_instances

    img_dir, gt_root, _, _ = _cityscapes(tmp_path)
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"libdet\[cityscapes\]"):
            load_cityscapes_instances(str(img_dir), str(gt_root))
        return
    dicts = load_cityscapes_instances(str(img_dir), str(gt_root), from_json=False, to_polygons=False)
    names = sorted(CITYSCAPES_THING_CLASSES[a["category_id"]] for a in dicts[0]["annotations"])
    assert names == ["car", "person"]
