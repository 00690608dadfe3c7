"""tools/demo.py: a tiny randomly initialised Mask R-CNN (saved with DetectionCheckpointer) drawn on a folder of
images, a registered dataset and a video; test-time preprocessing; and the errors users hit."""

import importlib.util
import os
import shutil
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data import transforms as T
from libdet.data.datasets import register_coco_instances
from libdet.data.datasets.shapes import SHAPES_CLASSES, generate_shapes_dataset
from libdet.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = "_demo_test_shapes"


def _load_tool():
    spec = importlib.util.spec_from_file_location("_tool_demo", os.path.join(ROOT, "tools", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_tool()

CONFIG = textwrap.dedent(f"""
    import libdet.data.transforms as T
    from libdet.config import LazyCall as L
    from tests.modeling._tiny_models import tiny_mask_rcnn_fpn

    model = tiny_mask_rcnn_fpn()
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    model.roi_heads.box_predictor.test_topk_per_image = 3
    dataloader = dict(test=dict(
        dataset=dict(names="{DATASET}"),
        mapper=dict(augmentations=[L(T.ResizeShortestEdge)(short_edge_length=48, max_size=96)], image_format="BGR"),
    ))
    train = dict(init_checkpoint="", output_dir="")
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny shapes images (PNG, 64 px) registered as a dataset, a config file and saved random weights."""
    root = tmp_path_factory.mktemp("demo")
    paths = generate_shapes_dataset(
        str(root / "data"),
        "val",
        num_images=3,
        seed=0,
        image_sizes=((64, 64), (64, 96)),
        max_objects=2,
        image_format="png",
    )
    register_coco_instances(DATASET, {"thing_classes": list(SHAPES_CLASSES)}, paths["json_file"], paths["image_root"])
    cfg_file = root / "tiny_cfg.py"
    cfg_file.write_text(CONFIG)
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(cfg_file)).model)
    DetectionCheckpointer(model, str(root / "weights")).save("model")
    folder = root / "images"
    folder.mkdir()
    images = sorted(f for f in os.listdir(paths["image_root"]) if f.endswith(".png"))[:2]
    for f in images:
        shutil.copy(os.path.join(paths["image_root"], f), folder / f)
    (folder / "notes.txt").write_text("not an image")  # ignored: not an image extension
    yield {
        "root": root,
        "cfg": str(cfg_file),
        "weights": str(root / "weights" / "model.pth"),
        "folder": folder,
        "images": images,
    }
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def _run(setup, *argv, weights=True):
    opts = [f"train.init_checkpoint={setup['weights']}"] if weights else []
    args = demo.get_parser().parse_args(["--config-file", setup["cfg"], "--device", "cpu", *argv, *opts])
    return demo.main(args)


def _read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def test_folder_of_two_images(setup, tmp_path):
    out = tmp_path / "out"
    written = _run(setup, "--input", str(setup["folder"]), "--output", str(out), "--confidence-threshold", "0")
    assert written == [str(out / f) for f in setup["images"]]
    for f in setup["images"]:
        drawn, original = _read(out / f), _read(setup["folder"] / f)
        assert drawn.shape == original.shape  # predictions are drawn at the input size
        assert (np.abs(drawn - original).max(axis=2) > 30).sum() > 20  # some instance was drawn
    # nothing reaches a threshold above 1: the image is written unchanged (PNG in, PNG out)
    written = _run(
        setup,
        "--input",
        str(setup["folder"] / setup["images"][0]),
        "--output",
        str(tmp_path / "one.png"),
        "--confidence-threshold",
        "1.01",
    )
    assert written == [str(tmp_path / "one.png")]
    assert np.array_equal(_read(tmp_path / "one.png"), _read(setup["folder"] / setup["images"][0]))


def test_glob_num_images_and_overrides_after_input(setup, tmp_path):
    pattern = str(setup["folder"] / "*.png")
    args = demo.get_parser().parse_args(
        [
            "--config-file",
            setup["cfg"],
            "--input",
            pattern,
            f"train.init_checkpoint={setup['weights']}",
            "--output",
            str(tmp_path),
            "--num-images",
            "1",
        ]
    )
    written = demo.main(args)
    assert written == [str(tmp_path / setup["images"][0])] and os.path.isfile(written[0])


def test_registered_dataset(setup, tmp_path):
    written = _run(setup, "--dataset", DATASET, "--num-images", "2", "--output", str(tmp_path))
    dicts = DatasetCatalog.get(DATASET)[:2]
    assert written == [str(tmp_path / f"{d['image_id']}.png") for d in dicts]
    for d, path in zip(dicts, written):
        assert _read(path).shape == (d["height"], d["width"], 3)


def test_predictor_applies_test_resize_and_returns_original_size():
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, batched_inputs):
            (x,) = batched_inputs
            seen.update(shape=tuple(x["image"].shape), size=(x["height"], x["width"]), image=x["image"])
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor([[2.0, 3.0, 20.0, 30.0]]))
            inst.scores = torch.tensor([0.9])
            inst.pred_classes = torch.tensor([1])
            return [{"instances": inst}]

    image = np.zeros((128, 192, 3), dtype=np.uint8)
    image[:, :, 0] = 200  # blue in BGR
    predictor = demo.DemoPredictor(
        Recorder(), augmentations=[T.ResizeShortestEdge(32, max_size=1000)], input_format="BGR"
    )
    out = predictor(image)
    assert seen["shape"] == (3, 32, 48) and seen["size"] == (128, 192)
    assert int(seen["image"][0].float().mean()) == 200 and int(seen["image"][2].max()) == 0  # channels kept
    vis = demo.draw_predictions(image[:, :, ::-1], out, {"thing_classes": ["a", "b"]}, confidence_threshold=0.5)
    drawn = vis.get_image().astype(np.int32)
    assert drawn.shape == (128, 192, 3)
    assert np.abs(drawn[16, 1:4] - image[16, 1:4, ::-1]).max() > 30  # left edge of the box at x=2
    assert np.array_equal(drawn[70:, 80:], image[70:, 80:, ::-1])  # far from the box and its label
    with pytest.raises(ValueError, match="expected one of"):
        demo.draw_predictions(image, {"foo": 1}, None)


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="OpenCV (cv2) is not installed")
def test_video(setup, tmp_path):
    import cv2

    frames = [_read(setup["folder"] / setup["images"][0]).astype(np.uint8)[:, :, ::-1]] * 3
    src = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(src, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        writer.write(np.ascontiguousarray(f))
    writer.release()
    (out,) = _run(setup, "--video-input", src, "--output", str(tmp_path / "out"), "--confidence-threshold", "0")
    assert out == str(tmp_path / "out" / "clip.mp4")
    cap = cv2.VideoCapture(out)
    read = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        read.append(frame)
    cap.release()
    assert len(read) == 3 and read[0].shape == frames[0].shape
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".")]  # no temporary file left


def test_video_without_opencv_names_the_package(setup, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match="opencv-python"):
        _run(setup, "--video-input", str(tmp_path / "clip.mp4"), "--output", str(tmp_path))


def test_errors(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        _run(setup, "--input", str(tmp_path / "missing.jpg"), "--output", str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        _run(setup, "--input", str(empty), "--output", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="matches no file"):
        _run(setup, "--input", str(empty / "*.jpg"), "--output", str(tmp_path))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(OSError, match="broken.jpg"):
        _run(setup, "--input", str(bad), "--output", str(tmp_path / "o"))
    img = str(setup["folder"] / setup["images"][0])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        args = demo.get_parser().parse_args(
            [
                "--config-file",
                setup["cfg"],
                "--input",
                img,
                "--output",
                str(tmp_path),
                f"train.init_checkpoint={tmp_path / 'nope.pth'}",
            ]
        )
        demo.main(args)
    with pytest.raises(ValueError, match="train.init_checkpoint"):
        _run(setup, "--input", img, "--output", str(tmp_path), weights=False)
    with pytest.raises(ValueError, match="not registered"):
        _run(setup, "--dataset", "_demo_test_shapez", "--output", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no_such_cfg.py"):
        demo.main(
            demo.get_parser().parse_args(
                ["--config-file", str(tmp_path / "no_such_cfg.py"), "--input", img, "--output", str(tmp_path)]
            )
        )
    with pytest.raises(ValueError, match="--device"):
        _run(setup, "--input", img, "--output", str(tmp_path), "--device", "tpu:x")


def test_draw_semantic_and_panoptic_outputs():
    image = np.full((64, 96, 3), 120, dtype=np.uint8)
    scores = torch.zeros(3, 64, 96)
    scores[0] = 1.0
    scores[2, 10:40, 20:60] = 5.0  # class 2 in a rectangle, class 0 elsewhere
    meta = {"stuff_classes": ["bg", "x", "y"], "stuff_colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}
    drawn = demo.draw_predictions(image, {"sem_seg": scores}, meta).get_image().astype(np.int32)
    assert drawn.shape == (64, 96, 3)
    region = drawn[12:38, 22:58].reshape(-1, 3).mean(axis=0)
    assert region[1] > region[0] + 50  # the class-2 region is tinted with its green stuff colour
    seg = torch.zeros(64, 96, dtype=torch.int32)
    seg[5:30, 5:40] = 1
    info = [{"id": 1, "category_id": 0, "isthing": True, "score": 0.9}]
    drawn = demo.draw_predictions(image, {"panoptic_seg": (seg, info)}, {"thing_classes": ["t"]}).get_image()
    changed = np.abs(drawn.astype(np.int32) - image).max(axis=2) > 20
    assert changed[8:27, 8:37].mean() > 0.5 and not changed[45:, 60:].any()
