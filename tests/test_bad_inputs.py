"""A corpus of bad inputs — images, annotations, configs, checkpoints, command-line arguments — each of which must
fail (or, where the policy says so, be dropped and counted) with a message that names the culprit: the file, the
annotation id, the config key or the argument.

Every case builds its bad input in a temporary folder; nothing is downloaded.
"""

import argparse
import importlib.util
import json
import logging
import math
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.data import DatasetCatalog, DatasetMapper, MapDataset, MetadataCatalog, get_detection_dataset_dicts
from libdet.data.datasets import load_coco_json
from libdet.data.detection_utils import read_image
from libdet.data.errors import AnnotationError, DataError, ImageNotFoundError, ImageReadError, SizeMismatchError
from libdet.structures import BoxMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_bad_inputs_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(path, w=32, h=24):
    Image.fromarray(np.full((h, w, 3), 127, dtype=np.uint8)).save(path)
    return str(path)


def _mapper(**kwargs):
    return DatasetMapper(is_train=True, augmentations=[], image_format="RGB", **kwargs)


def _ann(**overrides):
    ann = {"bbox": [2.0, 3.0, 10.0, 8.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0}
    ann.update(overrides)
    return ann


def _bad_image(tmp_path, kind):
    path = tmp_path / "bad_image.png"
    if kind == "missing":
        return str(tmp_path / "missing_image.png")
    if kind == "text":
        path.write_text("this is not an image")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _png(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize(
    "kind, error", [("missing", ImageNotFoundError), ("text", ImageReadError), ("empty", ImageReadError)]
)
def test_image_unreadable_names_the_file(tmp_path, kind, error):
    path = _bad_image(tmp_path, kind)
    with pytest.raises(error, match=os.path.basename(path)):
        read_image(path, format="RGB")
    with pytest.raises(error, match=os.path.basename(path)):  # through the mapper: a DataError, so MapDataset skips it
        _mapper()({"file_name": path, "image_id": 1, "annotations": []})


def test_image_truncated_names_the_file(tmp_path):
    path = _bad_image(tmp_path, "truncated")
    with pytest.raises(ImageReadError, match="bad_image.png"):
        read_image(path)


def test_image_size_differs_from_its_dataset_dict(tmp_path):
    path = _png(tmp_path / "sized.png", w=32, h=24)
    with pytest.raises(SizeMismatchError, match=r"sized\.png.*\(32, 24\).*\(40, 24\)"):
        _mapper()({"file_name": path, "image_id": 1, "width": 40, "height": 24, "annotations": []})


def test_sem_seg_size_differs_from_the_image(tmp_path):
    image = _png(tmp_path / "im.png", w=32, h=24)
    label = tmp_path / "label.png"
    Image.fromarray(np.zeros((20, 32), dtype=np.uint8)).save(label)
    with pytest.raises(SizeMismatchError, match="im.png"):
        _mapper()({"file_name": image, "sem_seg_file_name": str(label)})


def test_corrupt_image_is_skipped_and_then_stops_training_with_a_summary(tmp_path, caplog):
    good = _png(tmp_path / "good.png")
    bad = _bad_image(tmp_path, "text")
    dicts = [{"file_name": good, "image_id": 0}, {"file_name": bad, "image_id": 1}]
    ds = MapDataset(dicts, _mapper(), max_failed_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="libdet.data.common"):
        out = ds[1]
    assert out["file_name"] == good and "bad_image.png" in caplog.text
    with pytest.raises(RuntimeError, match="(?s)1 of 2 samples failed.*bad_image.png"):
        MapDataset(dicts, _mapper(), max_failed_fraction=0.0)[1]


def _coco(tmp_path, annotations, *, keypoint_names=None, name="bad.json"):
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    if keypoint_names:
        categories = [{**c, "keypoints": keypoint_names} for c in categories]
    data = {
        "images": [{"id": 5, "file_name": "img5.jpg", "width": 40, "height": 30}],
        "categories": categories,
        "annotations": [
            {"id": 70 + i, "image_id": 5, "category_id": 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)
        ],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))  # json writes NaN / Infinity literals, which json.load reads back
    return str(path)


GOOD_BOX = {"bbox": [1, 2, 10, 8]}
SQUARE = [1, 1, 9, 1, 9, 9, 1, 9]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"bbox": [1, math.nan, 10, 8]}, "NaN or infinite"),
        ({"bbox": [1, 2, math.inf, 8]}, "NaN or infinite"),
        ({"bbox": [1, 2, -10, 8]}, "negative width or height"),
        ({"bbox": [1, 2, 10]}, "has 3 values"),
        ({"bbox": [1, 2, "ten", 8]}, "not a list of numbers"),
        ({**GOOD_BOX, "segmentation": [[1, 1, 9, 1, 9, 9, 1]]}, "polygon 0 has 7 coordinates, an odd number"),
        ({**GOOD_BOX, "segmentation": [[1, 1, 9, "x", 9, 9]]}, "polygon 0 .* not a list of numbers"),
        ({**GOOD_BOX, "segmentation": [SQUARE, [1, 1, 9, math.nan, 9, 9]]}, "polygon 1 .* NaN or infinite"),
        ({**GOOD_BOX, "segmentation": "polygon"}, "segmentation must be"),
        ({**GOOD_BOX, "segmentation": {"size": [10, 40], "counts": "abc"}}, r"RLE size \[h, w\]=\[10, 40\]"),
        ({**GOOD_BOX, "segmentation": {"size": [30, 40]}}, "RLE segmentation needs 'counts' and 'size'"),
        ({**GOOD_BOX, "category_id": 9}, "category_id 9, which is not in 'categories'"),
        ({**GOOD_BOX, "category_id": True}, "category_id True"),
    ],
)
def test_coco_annotation_errors_name_file_image_and_annotation(tmp_path, bad, match):
    path = _coco(tmp_path, [GOOD_BOX, bad])
    with pytest.raises(AnnotationError, match=match) as e:
        load_coco_json(path, "/images")
    message = str(e.value)
    assert "bad.json" in message and "img5.jpg" in message and "id=71" in message


@pytest.mark.parametrize("keypoints", [[1, 2, 2, 3, 4], [1, 2, 2, 3, 4, 2, 5, 6, 2]])
def test_coco_keypoints_of_the_wrong_length(tmp_path, keypoints):
    path = _coco(tmp_path, [{**GOOD_BOX, "keypoints": keypoints}], keypoint_names=["left", "right"])
    with pytest.raises(AnnotationError, match=rf"id=70 .*bad\.json.*{len(keypoints)} values; expected 3 \* 2 = 6"):
        load_coco_json(path, "/images")


def test_coco_dropped_annotations_are_counted_in_the_summary(tmp_path, caplog):
    """Policy "drop with a warning": polygons of < 3 points, annotations left without a polygon, boxes entirely
    outside the image. The per-file summary names the file and counts each reason."""
    annotations = [
        GOOD_BOX,
        {**GOOD_BOX, "segmentation": [[1, 1, 5, 5]]},  # only a 2-point polygon: dropped
        {**GOOD_BOX, "segmentation": [SQUARE, [1, 1, 5, 5]]},  # one polygon removed, annotation kept
        {"bbox": [50, 2, 10, 8]},  # x beyond the 40 px wide image: dropped
        {"bbox": [-5, -5, 10, 8]},  # partly outside: kept (clipped later)
    ]
    path = _coco(tmp_path, annotations)
    with caplog.at_level(logging.WARNING, logger="libdet.data.datasets.coco"):
        dicts = load_coco_json(path, "/images")
    assert [a["id"] for a in dicts[0]["annotations"]] == [70, 72, 74]
    assert dicts[0]["annotations"][1]["segmentation"] == [[float(c) for c in SQUARE]]
    assert "bad.json" in caplog.text and "5 annotations" in caplog.text
    assert "1 annotations dropped: no polygon with at least 3 points" in caplog.text
    assert "1 annotations dropped: box entirely outside the image" in caplog.text
    assert "2 polygons removed: fewer than 3 points" in caplog.text


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "Annotation id 70"),
        (lambda d: d["annotations"].append({**d["annotations"][0], "id": 99, "image_id": 404}), "image id 404"),
        (lambda d: d.pop("images"), "no 'images'"),
    ],
)
def test_coco_structure_errors(tmp_path, edit, match):
    data = json.loads(open(_coco(tmp_path, [GOOD_BOX], name="src.json")).read())
    edit(data)
    path = tmp_path / "broken_structure.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as e:
        load_coco_json(str(path), "")
    assert "broken_structure.json" in str(e.value)


def test_coco_file_missing_or_not_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        load_coco_json(str(tmp_path / "absent.json"), "")
    (tmp_path / "garbled.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="garbled.json"):
        load_coco_json(str(tmp_path / "garbled.json"), "")


# Annotations of custom loaders (the mapper)
@pytest.mark.parametrize(
    "bad, match",
    [
        (_ann(category_id=-1), "category_id -1 is outside"),
        (_ann(category_id=1.5), "category_id 1.5 is not an integer"),
        (_ann(segmentation=[[1, 1, 9, 1, 9]]), "polygon 0 has 5 coordinates, an odd number"),
        (_ann(segmentation={"size": [10, 10], "counts": "PQ"}), r"RLE size \[h, w\]=\[10, 10\] .* \[24, 32\]"),
        (_ann(segmentation=np.zeros((5, 5), dtype=np.uint8)), r"mask segmentation of shape \(5, 5\)"),
        (_ann(bbox=[5.0, 5.0, 2.0, 2.0], bbox_mode=BoxMode.XYXY_ABS), "negative width or height"),
        ({"bbox": [1, 1, 4, 4], "category_id": 0}, "needs 'bbox' and 'bbox_mode'"),
        (_ann(keypoints=[1, 1, 2, 3, 3]), "keypoints have 5 values; expected 3 \\* 2 = 6"),
    ],
)
def test_mapper_rejects_malformed_annotations_of_any_loader(tmp_path, bad, match):
    path = _png(tmp_path / "custom.png", w=32, h=24)
    mapper = _mapper(use_instance_mask=True, use_keypoint=True, keypoint_hflip_indices=np.array([1, 0]))
    dataset_dict = {"file_name": path, "image_id": 3, "annotations": [_ann(), bad]}
    with pytest.raises(AnnotationError, match=match) as e:
        mapper(dataset_dict)
    assert "custom.png" in str(e.value) and "annotation #1" in str(e.value)
    assert isinstance(e.value, DataError)  # so that MapDataset counts the image as bad data, not a bug


def test_category_id_outside_the_datasets_classes(tmp_path):
    name = "_bad_inputs_category_range"
    dicts = [{"file_name": "f1.jpg", "image_id": 1, "annotations": [_ann(category_id=0), _ann(category_id=2, id=17)]}]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    try:
        with pytest.raises(AnnotationError, match=r"id=17 of image 'f1.jpg' has category_id=2, outside \[0, 2\)"):
            get_detection_dataset_dicts(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_config_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_config.py"):
        LazyConfig.load(str(tmp_path / "no_such_config.py"))


def test_config_with_a_syntax_error(tmp_path):
    path = tmp_path / "broken_syntax.py"
    path.write_text("model = dict(\n")
    with pytest.raises(SyntaxError, match="broken_syntax.py"):
        LazyConfig.load(str(path))


def test_config_yaml_with_a_python_tag_is_refused(tmp_path):
    path = tmp_path / "unsafe.yaml"
    path.write_text('model: !!python/object/apply:os.system ["echo pwned"]\n')
    with pytest.raises(ValueError, match="unsafe.yaml"):
        LazyConfig.load(str(path))


def _small_config(tmp_path):
    path = tmp_path / "small.py"
    path.write_text(
        "import torch\nfrom libdet.config import LazyCall as L\n"
        "model = L(torch.nn.Linear)(in_features=2, out_features=3)\ntrain = dict(max_iter=3)\n"
    )
    return LazyConfig.load(str(path))


@pytest.mark.parametrize(
    "override, error, match",
    [
        ("train.max_itr=5", KeyError, "train.max_itr.*train.max_iter"),
        ("model.in_feature=5", KeyError, "model.in_feature.*model.in_features"),
        ("train.max_iter=[1,", ValueError, r"train.max_iter=\[1,"),
    ],
)
def test_config_bad_override_names_it(tmp_path, override, error, match):
    with pytest.raises(error, match=match):
        LazyConfig.apply_overrides(_small_config(tmp_path), [override])


def test_config_target_that_does_not_exist(tmp_path):
    cfg = _small_config(tmp_path)
    cfg.model._target_ = "libdet.no_such_module.Thing"
    with pytest.raises(Exception, match="libdet.no_such_module.Thing"):
        instantiate(cfg.model)


def test_config_argument_of_the_wrong_type(tmp_path):
    cfg = _small_config(tmp_path)
    cfg.model.in_features = "two"
    with pytest.raises(Exception, match="torch.nn.Linear"):
        instantiate(cfg.model)


class _Net(nn.Module):
    """backbone: 8 * 16 + 16 = 144 values; head: 16 * n + n (51 for n = 3)."""

    def __init__(self, num_outputs=3):
        super().__init__()
        self.backbone = nn.Linear(8, 16)
        self.head = nn.Linear(16, num_outputs)


def _save(path, state):
    torch.save({"model": state}, path)
    return str(path)


def test_checkpoint_none_of_whose_tensors_fit(tmp_path):
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    path = _save(tmp_path / "other_arch.pth", other.state_dict())
    model = _Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for allow_partial in (False, True):
        with pytest.raises(ValueError, match=r"other_arch\.pth.*fits only 0 of the model's 4 tensors.*'0.weight'"):
            DetectionCheckpointer(model).load(path, allow_partial=allow_partial)
    for k, v in model.state_dict().items():  # the model is left unchanged
        assert torch.equal(v, before[k])


def test_checkpoint_fitting_less_than_half_needs_allow_partial(tmp_path):
    head_only = {f"head.{k}": v for k, v in nn.Linear(16, 3).state_dict().items()}  # 51 of 195 values
    path = _save(tmp_path / "head_only.pth", head_only)
    model = _Net()
    with pytest.raises(ValueError, match=r"head_only\.pth.*2 of the model's 4 tensors \(26\.2%.*backbone\.weight"):
        DetectionCheckpointer(model).load(path)
    DetectionCheckpointer(model).load(path, allow_partial=True)
    assert torch.equal(model.head.weight, head_only["head.weight"])
    # fine-tuning a new head: the backbone (74 % of the values) fits, the 5-output head does not; no opt-in needed
    DetectionCheckpointer(_Net(num_outputs=5)).load(_save(tmp_path / "full.pth", _Net().state_dict()))


def test_checkpoint_resume_requires_a_full_fit(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _save(run / "model_0000009.pth", {f"head.{k}": v for k, v in nn.Linear(16, 3).state_dict().items()})
    (run / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(ValueError, match="model_0000009.pth"):
        DetectionCheckpointer(_Net(), str(run)).resume_or_load("", resume=True, allow_partial=True)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x00garbage, not a checkpoint", "torch.load"),
        (None, "holds a list"),
    ],
)
def test_checkpoint_file_unreadable(tmp_path, content, match):
    path = tmp_path / "weird.pth"
    if content is None:
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"weird\.pth.*{match}|{match}.*weird\.pth"):
        DetectionCheckpointer(_Net()).load(str(path))


def test_checkpoint_pickle_with_code_is_refused(tmp_path):
    class _Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil_model.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": _Evil()}, "__author__": "x"}))
    with pytest.raises(pickle.UnpicklingError, match="system") as e:
        DetectionCheckpointer(_Net()).load(str(path))
    assert "evil_model.pkl" in str(e.value)


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises((FileNotFoundError, RuntimeError), match="absent_weights.pth"):
        DetectionCheckpointer(_Net()).load(str(tmp_path / "absent_weights.pth"))


def test_checkpoint_value_that_is_not_a_tensor(tmp_path):
    path = tmp_path / "strings.pth"
    torch.save({"model": {"backbone.weight": "not a tensor"}}, path)
    with pytest.raises(ValueError, match="backbone.weight.*str"):
        DetectionCheckpointer(_Net()).load(str(path))


@pytest.fixture(scope="module")
def train_tool():
    return _load_tool("lazyconfig_train_net")


@pytest.mark.parametrize(
    "argv, culprit",
    [
        (["--config-file", "c.py", "--num-gpus", "two"], "--num-gpus"),
        (["--config-file", "c.py", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_cli_train_argument_errors(train_tool, capsys, argv, culprit):
    from libdet.engine import default_argument_parser

    with pytest.raises(SystemExit) as e:
        default_argument_parser().parse_args(argv)
    assert e.value.code == 2 and culprit in capsys.readouterr().err


def test_cli_train_missing_config_file(train_tool, tmp_path):
    args = argparse.Namespace(config_file=str(tmp_path / "absent_config.py"), opts=[], eval_only=False, resume=False)
    with pytest.raises(FileNotFoundError, match="absent_config.py"):
        train_tool.setup(args)


def test_cli_train_bad_device_names_the_setting():
    from libdet.engine.defaults import resolve_device

    with pytest.raises(ValueError, match="train.device.*gpu-please"):
        resolve_device("gpu-please", setting="train.device")


def test_cli_demo_missing_input_image(tmp_path):
    demo = _load_tool("demo")
    args = demo.get_parser().parse_args(
        ["--config-file", "unused.py", "--input", str(tmp_path / "absent_photo.jpg"), "--output", str(tmp_path)]
    )
    with pytest.raises(FileNotFoundError, match="absent_photo.jpg"):
        demo.main(args)


def test_cli_plot_metrics_bad_lines(tmp_path):
    plot = _load_tool("plot_metrics")
    with pytest.raises(FileNotFoundError, match="absent_metrics.json"):
        plot.load_metrics(str(tmp_path / "absent_metrics.json"))
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 0, "loss": 1.0}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics\.json:2"):
        plot.load_metrics(str(path))
