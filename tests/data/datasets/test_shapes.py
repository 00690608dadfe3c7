import hashlib
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from libdet.data.datasets import shapes
from libdet.data.datasets.coco import load_coco_json
from libdet.structures import polygons_to_bitmask


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(dirpath, f), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    # (generation speed is not asserted here: timings belong to benchmarks, not to tests on a shared machine)
    return shapes.generate_shapes_dataset(root, "train", num_images=24, seed=3), None


def test_deterministic(small_set, tmp_path):
    paths, _ = small_set
    other = shapes.generate_shapes_dataset(str(tmp_path), "train", num_images=24, seed=3)
    assert _digest(other["root"]) == _digest(paths["root"])
    different = shapes.generate_shapes_dataset(str(tmp_path / "b"), "train", num_images=24, seed=4)
    assert _digest(different["root"]) != _digest(paths["root"])


def test_json_content(small_set):
    paths, _ = small_set
    coco = json.load(open(paths["json_file"]))
    assert [c["name"] for c in coco["categories"]] == list(shapes.SHAPES_CLASSES)
    assert len(coco["images"]) == 24
    sizes = {(im["height"], im["width"]) for im in coco["images"]}
    assert len(sizes) >= 2 and all(192 <= min(s) and max(s) <= 256 for s in sizes)
    per_image = {}
    for a in coco["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    assert all(1 <= len(v) <= 6 for v in per_image.values())
    classes = {a["category_id"] for a in coco["annotations"]}
    assert classes == {1, 2, 3}
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    areas = [a["bbox"][2] * a["bbox"][3] for a in coco["annotations"]]
    assert min(areas) < 32 * 32 < max(areas)


def test_annotations_agree_with_pixels(small_set):
    paths, _ = small_set
    dicts = load_coco_json(paths["json_file"], paths["image_root"])
    overlapping = 0
    for d in dicts:
        img = Image.open(d["file_name"])
        assert img.size == (d["width"], d["height"])
        stem = os.path.basename(d["file_name"])[:-4]
        sem = np.asarray(Image.open(os.path.join(paths["sem_seg_root"], stem + ".png")))
        assert sem.shape == (d["height"], d["width"])
        masks = []
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= d["width"] and y + h <= d["height"]
            assert a["iscrowd"] == 0
            mask = polygons_to_bitmask([np.asarray(p) for p in a["segmentation"]], d["height"], d["width"])
            ys, xs = np.nonzero(mask)
            # the mask's pixel extent agrees with the box (pycocotools rasterizes about 1 px conservatively)
            assert abs(xs.min() - x) <= 1.5 and abs(xs.max() + 1 - (x + w)) <= 1.5
            assert abs(ys.min() - y) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5
            px, py = np.asarray(a["segmentation"][0]).reshape(-1, 2).T
            area = 0.5 * abs(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1)))
            assert abs(mask.sum() - area) <= 0.1 * area + 10
            masks.append(mask)
        # the semantic map is exactly the shapes' rasterized polygons painted in order
        expected = np.zeros_like(sem)
        for a, mask in zip(d["annotations"], masks):
            expected[mask] = a["category_id"] + 1
        assert (expected == sem).all(), d["file_name"]
        for k, (a, mask) in enumerate(zip(d["annotations"], masks)):
            later = np.zeros_like(mask)
            for m in masks[k + 1 :]:
                later |= m
            visible = mask & ~later
            overlapping += int((mask & later).any())
            # (contiguous id + 1; 0 = background): exactly the pixels of its rasterized polygon not covered later
            assert (sem[visible] == a["category_id"] + 1).all(), (d["file_name"], k)
            assert visible.sum() >= 0.4 * mask.sum()  # no shape is nearly hidden
            kps = np.asarray(a["keypoints"]).reshape(-1, 3)
            assert kps.shape == (5, 3) and set(kps[:, 2]) <= {1, 2}
            assert (kps[:, 0] >= 0).all() and (kps[:, 0] <= d["width"]).all()
            # left/right/top/bottom are the polygon's extremes
            x, y, w, h = a["bbox"]
            assert abs(kps[1, 0] - x) <= 1 and abs(kps[2, 0] - (x + w)) <= 1
            assert abs(kps[3, 1] - y) <= 1 and abs(kps[4, 1] - (y + h)) <= 1
    assert overlapping > 0  # some shapes overlap


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        shapes.generate_shapes_dataset(str(tmp_path), "x", num_images=0, seed=0)
    with pytest.raises(ValueError, match="image_format"):
        shapes.generate_shapes_dataset(str(tmp_path), "x", num_images=1, seed=0, image_format="bmp")
    with pytest.raises(KeyError, match="'nope'"):
        shapes.prepare_shapes_dataset("nope", str(tmp_path))


def test_prepare_cache_concurrent_and_incomplete(tmp_path, monkeypatch):
    monkeypatch.setitem(shapes.SHAPES_SPLITS, "val", {"num_images": 6, "seed": 1})
    root = str(tmp_path / "cache")
    results, errors = [], []

    def run():
        try:
            results.append(shapes.prepare_shapes_dataset("val", root))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert sorted(os.listdir(root)) == ["val"]  # temporary folders are gone
    digest = _digest(results[0]["root"])
    mtime = os.path.getmtime(results[0]["json_file"])
    assert shapes.prepare_shapes_dataset("val", root) == results[0]  # cached: not regenerated
    assert os.path.getmtime(results[0]["json_file"]) == mtime
    # a half-written split (no completion marker) is regenerated
    os.remove(os.path.join(results[0]["root"], ".complete"))
    os.remove(results[0]["json_file"])
    shapes.prepare_shapes_dataset("val", root)
    assert _digest(results[0]["root"]) == digest
