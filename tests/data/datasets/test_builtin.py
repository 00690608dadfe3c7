import json
import os
import subprocess
import sys

import pytest

from libdet.data.catalog import DatasetCatalog, MetadataCatalog

_PROBE = r"""
import builtins, io, json, os, sys
opened = []
real_open, real_io_open = builtins.open, io.open
def spy(file, *a, **k):
    opened.append(str(file))
    return real_open(file, *a, **k)
import torch  # heavy deps first: only libdet's own I/O is of interest
builtins.open = spy
io.open = spy
import libdet.data.datasets
builtins.open = real_open
from libdet.data.catalog import DatasetCatalog, MetadataCatalog
names = DatasetCatalog.list()
root = os.environ["LIBDET_DATASETS"]
errors = {}
for name in ["coco_2017_val", "keypoints_coco_2017_train", "coco_2017_val_panoptic",
             "coco_2017_val_panoptic_separated", "lvis_v1_val", "cityscapes_fine_instance_seg_train",
             "cityscapes_fine_sem_seg_val", "voc_2007_test", "ade20k_sem_seg_val"]:
    try:
        DatasetCatalog.get(name)
    except FileNotFoundError as e:
        errors[name] = str(e)
print(json.dumps({"opened": [f for f in opened if root in f or "shapes" in f], "names": names,
                  "errors": errors, "root_exists": os.path.exists(root),
                  "json_file": MetadataCatalog.get("shapes_val").json_file}))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("builtin")
    env = {**os.environ, "LIBDET_DATASETS": str(tmp / "missing_root")}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), str(tmp / "missing_root")


def test_import_does_no_io(probe):
    result, root = probe
    assert result["opened"] == []
    assert not result["root_exists"]  # nothing created, not even the shapes cache
    assert result["json_file"].startswith(os.path.join(root, "shapes-v"))


def test_builtin_names_registered(probe):
    names = set(probe[0]["names"])
    expected = {
        "coco_2014_train",
        "coco_2017_train",
        "coco_2017_val",
        "coco_2017_val_100",
        "keypoints_coco_2017_val",
        "coco_2017_train_panoptic",
        "coco_2017_train_panoptic_separated",
        "coco_2017_train_panoptic_stuffonly",
        "lvis_v1_train",
        "lvis_v0.5_val",
        "lvis_v0.5_train_cocofied",
        "cityscapes_fine_instance_seg_train",
        "cityscapes_fine_sem_seg_val",
        "voc_2007_trainval",
        "voc_2012_train",
        "ade20k_sem_seg_train",
        "ade20k_sem_seg_val",
        "shapes_train",
        "shapes_val",
        "shapes_sem_seg_train",
        "shapes_keypoints_val",
    }
    assert expected <= names


def test_missing_root_errors_name_path(probe):
    result, root = probe
    assert len(result["errors"]) == 9
    for name, message in result["errors"].items():
        assert root in message and "LIBDET_DATASETS" in message and name in message


def test_builtin_metadata():
    import libdet.data.datasets  # noqa: F401

    coco = MetadataCatalog.get("coco_2017_val")
    assert len(coco.thing_classes) == 80
    assert coco.thing_classes[0] == "person" and coco.thing_classes[-1] == "toothbrush"
    assert coco.thing_dataset_id_to_contiguous_id[90] == 79 and coco.evaluator_type == "coco"
    kp = MetadataCatalog.get("keypoints_coco_2017_train")
    assert len(kp.keypoint_names) == 17 and ["left_eye", "right_eye"] in kp.keypoint_flip_map
    flat = {n for pair in kp.keypoint_flip_map for n in pair}
    assert flat <= set(kp.keypoint_names)
    assert {n for a, b, _ in kp.keypoint_connection_rules for n in (a, b)} <= set(kp.keypoint_names)
    city = MetadataCatalog.get("cityscapes_fine_sem_seg_train")
    assert len(city.stuff_classes) == 19 and len(city.stuff_colors) == 19 and city.ignore_label == 255
    assert set(city.thing_classes) <= set(city.stuff_classes)
    assert len(MetadataCatalog.get("voc_2012_val").thing_classes) == 20
    s = MetadataCatalog.get("shapes_keypoints_train")
    assert s.thing_classes == ["circle", "square", "triangle"] and s.keypoint_flip_map == [["left", "right"]]
    assert MetadataCatalog.get("shapes_sem_seg_val").stuff_classes == ["background", "circle", "square", "triangle"]


def test_ade20k_classes_from_csv(tmp_path):
    from libdet.data.datasets.builtin import ade20k_classes

    csv = "Idx,Ratio,Train,Val,Name\n2,0.1,1,1,building;edifice\n1,0.2,1,1,wall\n"
    (tmp_path / "objectInfo150.csv").write_text(csv)
    assert ade20k_classes(str(tmp_path)) == ["wall", "building"]
    with pytest.raises(FileNotFoundError, match="objectInfo150"):
        ade20k_classes(str(tmp_path / "nope"))


def test_shapes_registration_end_to_end(tmp_path, monkeypatch):
    """shapes_val through the catalog: generated on first get, json_file in metadata exists afterwards."""
    from libdet.data.datasets import builtin, shapes

    monkeypatch.setitem(shapes.SHAPES_SPLITS, "val", {"num_images": 4, "seed": 1})
    root = str(tmp_path)
    name = "t_shapes_val_e2e"
    DatasetCatalog.register(name, lambda: builtin._load_shapes_instances("val", name, root))
    try:
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 4 and all(d["annotations"] for d in dicts)
        assert os.path.isfile(shapes.shapes_split_paths(root, "val")["json_file"])
        assert MetadataCatalog.get(name).thing_classes == list(shapes.SHAPES_CLASSES)
        sem = builtin._load_shapes_semantic("val", root)
        assert len(sem) == 4 and all(os.path.isfile(d["sem_seg_file_name"]) for d in sem)
    finally:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
