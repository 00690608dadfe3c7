"""tools/visualize_json_results.py: predictions (left) | ground truth (right) for a tiny registered dataset, the
score threshold, box-only and RLE results, and the validation errors."""

import importlib.util
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.structures import BoxMode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = "_vis_json_test"
H, W = 96, 128


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "_tool_visualize_json_results", os.path.join(ROOT, "tools", "visualize_json_results.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vj = _load_tool()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 96x128 noisy grey PNG images; image 1 has one ground-truth square at x 10..40, y 10..40."""
    root = tmp_path_factory.mktemp("vis_json")
    rng = np.random.default_rng(0)
    dicts = []
    for image_id in (1, 2):
        path = str(root / f"img{image_id}.png")
        Image.fromarray(rng.integers(100, 140, (H, W, 3), dtype=np.uint8)).save(path)
        annos = []
        if image_id == 1:
            annos.append(
                {
                    "bbox": [10, 10, 30, 30],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": 0,
                    "segmentation": [[10, 10, 40, 10, 40, 40, 10, 40]],
                    "iscrowd": 0,
                }
            )
        dicts.append({"file_name": path, "image_id": image_id, "height": H, "width": W, "annotations": annos})
    DatasetCatalog.register(DATASET, lambda: dicts)
    MetadataCatalog.get(DATASET).set(
        thing_classes=["a", "b", "c"], thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2}
    )
    yield {d["image_id"]: d for d in dicts}
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def _rle(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


RESULTS = [
    {"image_id": 1, "category_id": 2, "bbox": [60, 50, 30, 30], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.2},
    {"image_id": 2, "category_id": 3, "bbox": [30, 20, 40, 30], "score": 0.8, "segmentation": _rle(20, 50, 30, 70)},
]


def _run(tmp_path, results, *argv, name="results.json"):
    path = tmp_path / name
    path.write_text(results if isinstance(results, str) else json.dumps(results))
    args = vj.get_parser().parse_args(
        ["--input", str(path), "--dataset", DATASET, "--output", str(tmp_path / "out"), *argv]
    )
    return vj.main(args)


def _read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def _changed(a, b):
    return np.abs(a - b).max(axis=2) > 2


def test_predictions_left_ground_truth_right(dataset, tmp_path):
    written = _run(tmp_path, RESULTS)
    assert written == [str(tmp_path / "out" / "1.png"), str(tmp_path / "out" / "2.png")]
    out, image = _read(written[0]), _read(dataset[1]["file_name"])
    assert out.shape == (H, 2 * W, 3)
    left, right = _changed(out[:, :W], image), _changed(out[:, W:], image)
    assert left[58:72, 58:63].any()  # the left edge (x=60) of the 0.9 box
    assert not left[:, :50].any() and not left[:45].any()  # nothing else (the 0.2 box: x, y 5..25)
    gt = np.zeros((H, W), dtype=bool)
    gt[10:40, 10:40] = True
    assert right[gt].mean() > 0.9  # the ground-truth mask is filled
    assert not right[55:, 55:].any()  # and nothing is drawn far from it
    out2, image2 = _read(written[1]), _read(dataset[2]["file_name"])
    assert _changed(out2[:, :W], image2)[22:48, 32:68].mean() > 0.9  # RLE mask filled
    assert not _changed(out2[:, W:], image2).any()  # no ground truth in image 2


def test_threshold_and_num_images(dataset, tmp_path):
    written = _run(tmp_path, RESULTS, "--conf-threshold", "0.1", "--num-images", "1")
    assert written == [str(tmp_path / "out" / "1.png")]
    left = _changed(_read(written[0])[:, :W], _read(dataset[1]["file_name"]))
    assert left[8:20, 3:8].any()  # the 0.2 box is drawn now


def test_segmentation_only_results(dataset, tmp_path):
    results = [{"image_id": 2, "category_id": 1, "score": 0.7, "segmentation": _rle(60, 90, 80, 120)}]
    (_, path) = _run(tmp_path, results)
    changed = _changed(_read(path)[:, :W], _read(dataset[2]["file_name"]))
    assert changed[62:88, 82:118].mean() > 0.9 and not changed[:40, :60].any()


@pytest.mark.parametrize(
    "results, match",
    [
        ([{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], "entry 0: image_id 7"),
        ([RESULTS[0], {"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 1.0}], "entry 1: category_id 9"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], r"entry 0 lacks the keys \['score'\]"),
        ([{"image_id": 1, "category_id": 1, "score": 0.5}], "bbox or segmentation"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}], "bbox must be 4"),
        (
            [{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [5, 5], "counts": "a"}}],
            "bad segmentation",
        ),
        ({"image_id": 1}, "expected a JSON list"),
        ([3], "entry 0 is a int"),
        ("[{", "not valid JSON"),
    ],
)
def test_validation_errors_name_file_and_entry(dataset, tmp_path, results, match):
    with pytest.raises(ValueError, match=match) as e:
        _run(tmp_path, results, name="bad.json")
    assert "bad.json" in str(e.value)
    assert not (tmp_path / "out").exists()  # checked before anything is drawn


def test_missing_file_and_unknown_dataset(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        vj.main(
            vj.get_parser().parse_args(
                ["--input", str(tmp_path / "nope.json"), "--dataset", DATASET, "--output", str(tmp_path)]
            )
        )
    (tmp_path / "r.json").write_text("[]")
    with pytest.raises(ValueError, match="not registered"):
        vj.main(
            vj.get_parser().parse_args(
                ["--input", str(tmp_path / "r.json"), "--dataset", "_nope", "--output", str(tmp_path)]
            )
        )
