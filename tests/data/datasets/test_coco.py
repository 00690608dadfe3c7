import json
import logging
import os

import numpy as np
import pytest
from pycocotools import mask as mask_util

from libdet.data.catalog import DatasetCatalog, MetadataCatalog
from libdet.data.datasets.coco import (
    convert_to_coco_dict,
    convert_to_coco_json,
    load_coco_json,
    load_sem_seg,
    register_coco_instances,
)
from libdet.structures import BoxMode


def _coco_dict():
    square = np.zeros((20, 30), dtype=np.uint8)
    square[2:6, 3:9] = 1
    compressed = mask_util.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode("ascii")
    # uncompressed RLE: column-major run lengths starting with zeros
    uncompressed = {"size": [40, 50], "counts": [85, 5, 35, 5, 1870]}  # image 9 is 40 x 50
    return {
        "images": [
            {"id": 7, "file_name": "a.jpg", "height": 20, "width": 30},
            {"id": 9, "file_name": "b.jpg", "height": 40, "width": 50},
            {"id": 11, "file_name": "empty.jpg", "height": 10, "width": 10},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}, {"id": 5, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 18,
                "bbox": [1, 2, 10, 5],
                "iscrowd": 0,
                "area": 50,
                "segmentation": [[1, 2, 11, 2, 11, 7, 1, 7]],
                "keypoints": [3, 4, 2, 0, 0, 0],
                "score_x": 0.5,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 3,
                "bbox": [3, 2, 6, 4],
                "iscrowd": 1,
                "area": 24,
                "segmentation": compressed,
            },
            {
                "id": 3,
                "image_id": 9,
                "category_id": 5,
                "bbox": [2, 9, 2, 5],
                "iscrowd": 1,
                "area": 10,
                "segmentation": uncompressed,
            },
            # invalid polygon (2 points): dropped
            {
                "id": 4,
                "image_id": 9,
                "category_id": 5,
                "bbox": [0, 0, 4, 4],
                "iscrowd": 0,
                "segmentation": [[0, 0, 4, 4]],
            },
            # one invalid polygon among valid ones: only the invalid one is removed
            {
                "id": 5,
                "image_id": 9,
                "category_id": 3,
                "bbox": [0, 0, 4, 4],
                "iscrowd": 0,
                "segmentation": [[0, 0, 4, 0, 4, 4], [1, 1]],
            },
            # degenerate box: kept
            {"id": 6, "image_id": 9, "category_id": 3, "bbox": [5, 5, 0, 3], "iscrowd": 0},
        ],
    }


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def registered():
    names = []
    yield names
    for n in names:
        DatasetCatalog.pop(n, None)
        MetadataCatalog.pop(n, None)


def test_load_coco_json_fields(tmp_path, registered, caplog):
    registered.append("t_coco_fields")
    path = _write(tmp_path, _coco_dict())
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(path, "/imgs", "t_coco_fields", extra_annotation_keys=["score_x"])
    assert "1 annotations dropped: no polygon with at least 3 points" in caplog.text
    assert "2 polygons removed: fewer than 3 points" in caplog.text and "ann.json" in caplog.text
    assert [d["image_id"] for d in dicts] == [7, 9, 11]
    assert dicts[0]["file_name"] == os.path.join("/imgs", "a.jpg")
    assert (dicts[1]["height"], dicts[1]["width"]) == (40, 50)
    assert dicts[2]["annotations"] == []  # images without annotations are kept
    a0, a1 = dicts[0]["annotations"]
    # contiguous ids sorted by json id: 3 -> 0 (car), 5 -> 1 (cat), 18 -> 2 (dog)
    assert a0["category_id"] == 2 and a1["category_id"] == 0
    assert a0["bbox_mode"] == BoxMode.XYWH_ABS and a0["bbox"] == [1, 2, 10, 5]
    assert a0["segmentation"] == [[1.0, 2.0, 11.0, 2.0, 11.0, 7.0, 1.0, 7.0]]
    assert a0["keypoints"] == [3.5, 4.5, 2, 0.5, 0.5, 0]  # +0.5 on coordinates, not on visibility
    assert a0["score_x"] == 0.5 and "score_x" not in a1
    assert a0["iscrowd"] == 0 and a1["iscrowd"] == 1
    assert isinstance(a1["segmentation"]["counts"], str)
    m = mask_util.decode({"size": a1["segmentation"]["size"], "counts": a1["segmentation"]["counts"].encode()})
    assert m.sum() == 24 and m[2:6, 3:9].all()
    b = dicts[1]["annotations"]
    assert len(b) == 3  # annotation 4 dropped
    rle = b[0]["segmentation"]
    assert isinstance(rle["counts"], str)
    m = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert m.sum() == 10 and m[5:10, 2:4].all()
    assert b[1]["segmentation"] == [[0, 0, 4, 0, 4, 4]]
    assert b[2]["bbox"] == [5, 5, 0, 3] and "segmentation" not in b[2]
    meta = MetadataCatalog.get("t_coco_fields")
    assert meta.thing_classes == ["car", "cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 5: 1, 18: 2}


def test_loader_does_not_mutate_json_values(tmp_path):
    data = _coco_dict()
    path = _write(tmp_path, data)
    d1 = load_coco_json(path, "")
    d2 = load_coco_json(path, "")
    assert d1 == d2


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["images"].append(dict(d["images"][0])), "Image id 7"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "Annotation id 1"),
        (lambda d: d["annotations"].append({**d["annotations"][0], "id": 99, "image_id": 1234}), "image id 1234"),
        (lambda d: d["annotations"].append({**d["annotations"][0], "id": 99, "category_id": 42}), "category_id 42"),
        (lambda d: d["annotations"].append({**d["annotations"][0], "id": 99, "bbox": []}), "annotation id=99"),
    ],
)
def test_bad_input_names_file_and_id(tmp_path, edit, match):
    data = _coco_dict()
    edit(data)
    path = _write(tmp_path, data, "bad.json")
    with pytest.raises(ValueError, match=match) as e:
        load_coco_json(path, "")
    assert "bad.json" in str(e.value)


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_json(str(tmp_path / "nope.json"), "")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_coco_json(str(tmp_path / "broken.json"), "")


def test_convert_round_trip(tmp_path, registered):
    registered += ["t_coco_rt", "t_coco_rt2"]
    data = _coco_dict()
    data["images"] = [{**im, "file_name": os.path.join("/abs", im["file_name"])} for im in data["images"]]
    path = _write(tmp_path, data)
    register_coco_instances("t_coco_rt", {}, path, "/ignored")
    assert MetadataCatalog.get("t_coco_rt").evaluator_type == "coco"
    dicts = DatasetCatalog.get("t_coco_rt")
    out = str(tmp_path / "sub" / "converted.json")
    convert_to_coco_json("t_coco_rt", out)
    assert not [f for f in os.listdir(tmp_path / "sub") if f.endswith(".tmp")]  # atomic write leaves no temp
    converted = json.load(open(out))
    assert {c["id"]: c["name"] for c in converted["categories"]} == {3: "car", 5: "cat", 18: "dog"}
    ann0 = converted["annotations"][0]
    assert ann0["category_id"] == 18 and ann0["keypoints"] == [3, 4, 2, 0, 0, 0] and ann0["num_keypoints"] == 1
    assert ann0["area"] == pytest.approx(50.0)
    assert converted["annotations"][1]["area"] == pytest.approx(24.0)
    register_coco_instances("t_coco_rt2", {}, out, "/ignored")
    again = DatasetCatalog.get("t_coco_rt2")

    def strip(ds):
        return [
            {**d, "annotations": [{k: v for k, v in a.items() if k not in ("score_x", "id")} for a in d["annotations"]]}
            for d in ds
        ]

    assert strip(again) == strip(dicts)
    # cached: an existing file is not rewritten; allow_cached=False rewrites it
    with open(out, "w") as f:
        f.write("{}")
    convert_to_coco_json("t_coco_rt", out)
    assert open(out).read() == "{}"
    convert_to_coco_json("t_coco_rt", out, allow_cached=False)
    assert json.load(open(out))["images"][0]["id"] == 7


def test_convert_from_xyxy_boxes(registered):
    registered.append("t_coco_xyxy")
    DatasetCatalog.register(
        "t_coco_xyxy",
        lambda: [
            {
                "file_name": "x.jpg",
                "image_id": 1,
                "height": 10,
                "width": 10,
                "annotations": [{"bbox": [1, 2, 5, 8], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}],
            }
        ],
    )
    MetadataCatalog.get("t_coco_xyxy").thing_classes = ["a"]
    d = convert_to_coco_dict("t_coco_xyxy")
    assert d["annotations"][0]["bbox"] == [1, 2, 4, 6] and d["annotations"][0]["area"] == 24
    assert d["categories"] == [{"id": 0, "name": "a"}]


def test_convert_atomic_on_failure(tmp_path, registered):
    registered.append("t_coco_fail")
    # an image id json cannot serialize makes json.dump fail half-way
    DatasetCatalog.register(
        "t_coco_fail", lambda: [{"file_name": "x", "image_id": object(), "height": 1, "width": 1, "annotations": []}]
    )
    MetadataCatalog.get("t_coco_fail").thing_classes = ["a"]
    out = tmp_path / "o.json"
    out.write_text("old")
    with pytest.raises(TypeError):
        convert_to_coco_json("t_coco_fail", str(out), allow_cached=False)
    assert out.read_text() == "old"
    assert os.listdir(tmp_path) == ["o.json"]


def test_load_sem_seg(tmp_path):
    (tmp_path / "img" / "sub").mkdir(parents=True)
    (tmp_path / "gt" / "sub").mkdir(parents=True)
    for rel in ("a", "sub/b"):
        (tmp_path / "img" / f"{rel}.jpg").write_bytes(b"")
        (tmp_path / "gt" / f"{rel}.png").write_bytes(b"")
    (tmp_path / "gt" / "orphan.png").write_bytes(b"")
    dicts = load_sem_seg(str(tmp_path / "gt"), str(tmp_path / "img"))
    assert dicts == [
        {"file_name": str(tmp_path / "img" / "a.jpg"), "sem_seg_file_name": str(tmp_path / "gt" / "a.png")},
        {
            "file_name": str(tmp_path / "img" / "sub" / "b.jpg"),
            "sem_seg_file_name": str(tmp_path / "gt" / "sub" / "b.png"),
        },
    ]
    (tmp_path / "img" / "c.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"c\.png"):
        load_sem_seg(str(tmp_path / "gt"), str(tmp_path / "img"))
    with pytest.raises(FileNotFoundError, match="gt_root"):
        load_sem_seg(str(tmp_path / "nope"), str(tmp_path / "img"))
