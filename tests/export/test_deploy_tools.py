"""tools/deploy/export_model.py and tools/deploy/run_onnx.py end to end on a tiny Mask R-CNN."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from libdet.checkpoint import DetectionCheckpointer
from tests.export import _models

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "deploy"


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_deploy_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = textwrap.dedent("""
    import libdet.data.transforms as T
    from libdet.config import LazyCall as L
    from tests.modeling._tiny_models import tiny_mask_rcnn_fpn

    model = tiny_mask_rcnn_fpn()
    dataloader = dict(test=dict(
        mapper=dict(augmentations=[L(T.ResizeShortestEdge)(short_edge_length=96, max_size=160)], image_format="BGR"),
    ))
    train = dict(init_checkpoint="", output_dir="")
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    (root / "cfg.py").write_text(CONFIG)
    DetectionCheckpointer(_models.build("mask_rcnn_fpn"), str(root)).save("model")  # calibrated weights
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate([(70, 90), (120, 80)]):
        path = root / f"image{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    return {"root": root, "cfg": str(root / "cfg.py"), "weights": str(root / "model.pth"), "images": images}


def _export(setup, fmt: str, out: Path):
    tool = _load_tool("export_model")
    args = tool.get_parser().parse_args(
        ["--config-file", setup["cfg"], "--format", fmt, "--output", str(out), "--sample-image", *setup["images"]]
        + [f"train.init_checkpoint={setup['weights']}"]
    )
    return tool.main(args)


def test_export_model_tool_reports_difference_to_eager(setup, tmp_path):
    report = _export(setup, "torchscript", tmp_path)
    assert (tmp_path / "model.ts").is_file() and (tmp_path / "export_info.json").is_file()
    saved = json.loads((tmp_path / "export_report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    diff = saved["max_difference_to_eager"]
    assert saved["sample_sizes"] == [[96, 123], [144, 96]]  # resized by the config's ResizeShortestEdge
    assert all(a == b and a > 0 for a, b in diff["num_detections"])
    assert diff["box"] <= 1e-3 and diff["score"] <= 1e-4 and diff["mask_iou"] >= 0.99


def test_export_model_tool_errors(setup, tmp_path):
    tool = _load_tool("export_model")
    with pytest.raises(ValueError, match="train.init_checkpoint"):
        tool.main(
            tool.get_parser().parse_args(["--config-file", setup["cfg"], "--format", "onnx", "--output", str(tmp_path)])
        )
    with pytest.raises(FileNotFoundError, match="no_such.png"):
        args = ["--config-file", setup["cfg"], "--format", "onnx", "--output", str(tmp_path), "--sample-image"]
        tool.main(tool.get_parser().parse_args(args + ["no_such.png", f"train.init_checkpoint={setup['weights']}"]))


def test_export_model_tool_custom_ops_only_for_onnx(setup, tmp_path):
    tool = _load_tool("export_model")
    args = ["--config-file", setup["cfg"], "--format", "torchscript", "--output", str(tmp_path), "--onnx-custom-ops"]
    with pytest.raises(ValueError, match="onnx_custom_ops=True applies to format 'onnx' only"):
        tool.main(tool.get_parser().parse_args(args + [f"train.init_checkpoint={setup['weights']}"]))


@pytest.mark.slow
def test_run_onnx_draws_from_the_exported_file_alone(setup, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'libdet[export]')")
    pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime (pip install 'libdet[export]')")
    report = _export(setup, "onnx", tmp_path / "exported")
    assert report["max_difference_to_eager"]["box"] <= 1e-2
    tool = _load_tool("run_onnx")
    args = tool.get_parser().parse_args(
        [
            "--model",
            str(tmp_path / "exported" / "model.onnx"),
            "--input",
            *setup["images"],
            "--output",
            str(tmp_path / "vis"),
        ]
        + ["--short-edge", "96", "--max-size", "160", "--confidence", "0.0"]
    )
    written = tool.main(args)
    assert len(written) == 2
    for path, src in zip(written, setup["images"]):
        drawn, original = np.asarray(Image.open(path).convert("RGB")), np.asarray(Image.open(src).convert("RGB"))
        assert drawn.shape == original.shape and (drawn != original).any()  # predictions drawn on the original
