"""tools/explain.py: PNGs of feature maps, objectness / class probability and per-detection saliency and Grad-CAM
for tiny randomly initialised Mask R-CNN, RetinaNet and FCOS models (weights saved with DetectionCheckpointer) on
a shapes image; and the errors users hit."""

import importlib.util
import os
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.data.datasets.shapes import generate_shapes_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location("_tool_explain", os.path.join(ROOT, "tools", "explain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


explain = _load_tool()

CONFIG = textwrap.dedent("""
    import libdet.data.transforms as T
    from libdet.config import LazyCall as L
    from tests.modeling._tiny_models import {factory}

    model = {factory}()
    {threshold} = 0.0
    dataloader = dict(test=dict(
        mapper=dict(augmentations=[L(T.ResizeShortestEdge)(short_edge_length=160, max_size=256)], image_format="BGR"),
    ))
    train = dict(init_checkpoint="", output_dir="")
""")

MODELS = {
    "mask_rcnn": ("tiny_mask_rcnn_fpn", "model.roi_heads.box_predictor.test_score_thresh", "objectness", "p2"),
    "retinanet": ("tiny_retinanet", "model.test_score_thresh", "class_probability", "p3"),
    "fcos": ("tiny_fcos", "model.test_score_thresh", "class_probability", "p3"),
}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_data")
    paths = generate_shapes_dataset(
        str(root), "val", num_images=1, seed=0, image_sizes=((96, 128),), max_objects=2, image_format="png"
    )
    (name,) = [f for f in os.listdir(paths["image_root"]) if f.endswith(".png")]
    return os.path.join(paths["image_root"], name)


def _setup(tmp_path, name):
    factory, threshold, _, _ = MODELS[name]
    cfg_file = tmp_path / f"{name}.py"
    cfg_file.write_text(CONFIG.format(factory=factory, threshold=threshold))
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(cfg_file)).model)
    DetectionCheckpointer(model, str(tmp_path)).save(name)
    return str(cfg_file), str(tmp_path / f"{name}.pth")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_writes_pngs(tmp_path, image, name):
    cfg_file, weights = _setup(tmp_path, name)
    out = tmp_path / "out"
    args = explain.get_parser().parse_args(
        ["--config-file", cfg_file, "--input", image, "--output", str(out), "--device", "cpu",
         "--detections", "0", "2", f"train.init_checkpoint={weights}"]
    )  # fmt: skip
    written = explain.main(args)
    names = sorted(os.path.basename(p) for p in written)
    _, _, prefix, level = MODELS[name]
    expected = {"detections.png", f"features_{level}.png", f"{prefix}_{level}.png"}
    expected |= {f"det{k}_score_{m}.png" for k in (0, 2) for m in ("saliency", "gradcam")}
    assert expected <= set(names) and len(names) == 1 + 5 + 5 + 4
    # the image is resized to a short edge of 160 (96 x 128 -> 160 x 213); every picture has that size
    for p in written:
        with Image.open(p) as im:
            assert im.size == (213, 160) and im.mode == "RGB"
    # the saliency picture is not the plain image: the heat map is drawn over it
    with Image.open(out / "det0_score_saliency.png") as a, Image.open(out / "detections.png") as b:
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() > 5


def test_mask_target_and_errors(tmp_path, image):
    cfg_file, weights = _setup(tmp_path, "mask_rcnn")
    base = ["--config-file", cfg_file, "--input", image, "--output", str(tmp_path / "o"), "--device", "cpu"]
    written = explain.main(
        explain.get_parser().parse_args([*base, "--target", "mask", f"train.init_checkpoint={weights}"])
    )
    assert {"det0_mask_saliency.png", "det0_mask_gradcam.png"} <= {os.path.basename(p) for p in written}
    with pytest.raises(ValueError, match=r"--detections takes ranks \(0, 1, ...\), got \['x'\]"):
        explain.main(explain.get_parser().parse_args([*base, "--detections", "x", f"train.init_checkpoint={weights}"]))
    with pytest.raises(ValueError, match="no weights to load: pass train.init_checkpoint"):
        explain.main(explain.get_parser().parse_args(base))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        explain.main(explain.get_parser().parse_args([*base, "train.init_checkpoint=missing.pth"]))
    bad_input = [*base[:3], str(tmp_path / "nope.jpg"), *base[4:], f"train.init_checkpoint={weights}"]
    with pytest.raises(FileNotFoundError, match="--input .*nope.jpg"):
        explain.main(explain.get_parser().parse_args(bad_input))
