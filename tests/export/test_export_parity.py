"""Exported vs eager outputs for every model family and export format, on two images of sizes other than
the export sample and a batch of two; empty detections; the committed support table agrees.

Exporting is slow (torch.export's symbolic shapes, the ONNX translation, AOTInductor's C++ build): the
default run covers TorchScript tracing of every family, torch.export of Mask R-CNN and ONNX of semantic
FPN; the other cells are ``slow``. AOTInductor compiles for minutes per model, so of its column only Mask
R-CNN FPN (NMS, ROI pooling, the mask head and mask pasting on a data-dependent number of detections: the
family where an AOTInductor bug showed) is checked here; ``python -m tests.export.support_table`` measures
the others. Exported artifacts are shared within the module.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.nn import functional as F

from libdet.export import DeployableModel, compare_to_eager, deployable_model, export_model
from tests.export import _models
from tests.export.support_table import FORMATS, MIN_MASK_IOU, SCORE_TOL, read_table

FAST = {("mask_rcnn_fpn", "torch_export"), ("semantic_fpn", "onnx")} | {(f, "torchscript") for f in _models.FAMILIES}
AOT_INDUCTOR_CHECKED = {"mask_rcnn_fpn"}
CASES = [
    pytest.param(family, fmt, id=f"{family}-{fmt}", marks=() if (family, fmt) in FAST else pytest.mark.slow)
    for fmt in ("torchscript", "torch_export", "onnx", "aot_inductor")
    for family in _models.FAMILIES
    if fmt != "aot_inductor" or family in AOT_INDUCTOR_CHECKED
]
DETECTORS = {f for f in _models.FAMILIES if f != "semantic_fpn"}


def _require(fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'libdet[export]')")
        pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime (pip install 'libdet[export]')")
    if fmt == "aot_inductor" and shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("AOTInductor needs a C++ compiler")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(family, fmt) -> (eager model, ExportedModel)``, each exported once per module."""
    cache = {}

    def get(family: str, fmt: str):
        if (family, fmt) not in cache:
            model = _models.build(family)
            sample, _ = _models.images(family)
            out_dir = tmp_path_factory.mktemp(f"{family}_{fmt}")
            cache[(family, fmt)] = (model, export_model(model, sample, fmt, out_dir))
        return cache[(family, fmt)]

    return get


@pytest.mark.parametrize("family, fmt", CASES)
def test_exported_matches_eager(family, fmt, exported):
    """Where docs/export_support.md says "yes" the export matches eager; where it says "no" it does not."""
    _require(fmt)
    status = read_table().get((family, fmt), ("missing", ""))[0]
    if status not in ("yes", "no"):
        pytest.skip(
            f"docs/export_support.md has no result for {family} / {fmt} (not measured yet): measure it with "
            f"`python -m tests.export.support_table --families {family} --formats {fmt}`."
        )
    _, batches = _models.images(family)
    try:
        model, exported_model = exported(family, fmt)
        diff = compare_to_eager(model, exported_model, batches)
    except Exception as e:  # export or run failure: what a "no" documents
        assert status == "no", f"{family} / {fmt} fails ({type(e).__name__}: {e}) but the table says 'yes'"
        return
    problems = diff.check(FORMATS[fmt][1], SCORE_TOL, MIN_MASK_IOU)
    if status == "no":
        assert problems, f"{family} / {fmt} now matches eager ({diff.summary()}); regenerate the table"
        return
    if family in DETECTORS:
        assert len(diff.num_detections) == 4 and all(n > 0 for n, _ in diff.num_detections), (
            f"the calibrated {family} should detect objects in every image: {diff.num_detections}"
        )
    assert not problems, f"{family} exported as {fmt}: {problems} ({diff.summary()})"


def test_torchscript_scripting_is_as_documented():
    """Scripting (``scripting_with_instances``) is measured per family by tests/export/test_scripting.py;
    here: the table has a measured cell for every family, and a "no" says where scripting stops."""
    table = read_table()
    for family in _models.FAMILIES:
        status, detail = table.get((family, "torchscript_scripting"), ("missing", ""))
        assert status == "yes" or (status == "no" and "scripting_with_instances stops at libdet/" in detail), (
            family,
            status,
            detail,
        )


@pytest.mark.parametrize(
    "fmt",
    ["torchscript", pytest.param("torch_export", marks=pytest.mark.slow), pytest.param("onnx", marks=pytest.mark.slow)],
)
def test_empty_detections(fmt, tmp_path):
    """A score threshold no detection reaches: empty outputs of the right shapes, as in eager mode."""
    _require(fmt)
    model = _models.build("mask_rcnn_fpn")
    model.roi_heads.box_predictor.test_score_thresh = 1.0
    sample, batches = _models.images("mask_rcnn_fpn")
    exported_model = export_model(model, sample, fmt, tmp_path)
    diff = compare_to_eager(model, exported_model, batches)
    assert diff.num_detections == [(0, 0)] * 4
    outputs = exported_model(batches[0])
    assert outputs["boxes"].shape == (0, 4) and outputs["scores"].shape == (0,)
    assert outputs["masks"].shape == (0, *batches[0].shape[2:])


def test_export_info_and_reload(exported):
    """The exported file runs on its own: ``load_exported`` reads it with its ``export_info.json``."""
    from libdet.export import load_exported

    model, exported_model = exported("mask_rcnn_fpn", "torchscript")
    reloaded = load_exported(exported_model.path)
    assert reloaded.output_names == ("boxes", "scores", "classes", "batch_index", "masks")
    assert reloaded.info["model_class"] == "GeneralizedRCNN"
    _, batches = _models.images("mask_rcnn_fpn")
    a, b = exported_model(batches[0]), reloaded(batches[0])
    assert all(torch.equal(a[k], b[k]) for k in a)


class _PooledToOnePixel(DeployableModel):
    """A map that is 1 x 1 on the export sample (like RetinaNet's p7): ``(N, C * ceil(H' / 128) * ceil(W' / 128))``."""

    output_names = ("pooled",)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.max_pool2d(self.preprocess(images), 128, ceil_mode=True)
        return (x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).view(x.shape[0], -1),)


@pytest.mark.slow
def test_aot_inductor_keeps_sizes_generic(tmp_path):
    """AOTInductor compiles for every image size, not only those where the sample's 1 x 1 map stays 1 x 1:
    compiled without size-oblivious reasoning, this model returned a (1, 0) tensor instead of (1, 6) on a
    130 px high image (and RetinaNet corrupted the heap)."""
    _require("aot_inductor")
    deployable = _PooledToOnePixel(_models.build("semantic_fpn")).eval()
    sample, _ = _models.images("semantic_fpn")
    exported_model = export_model(deployable, sample, "aot_inductor", tmp_path)
    for images in (sample, torch.rand(1, 3, 130, 90) * 255, torch.rand(3, 3, 300, 260) * 255):
        expected = deployable(images)[0]
        actual = exported_model(images)["pooled"]
        assert actual.shape == expected.shape and torch.allclose(actual, expected), tuple(images.shape)
    # An input the package was not compiled for is refused with an error (load_exported turns on its input
    # checks), not run out of bounds.
    with pytest.raises(
        RuntimeError, match=r"model_aoti\.pt2 \(aot_inductor\) failed on images of shape \(1, 4, 96, 128\)"
    ):
        exported_model(torch.rand(1, 4, 96, 128) * 255)


def test_bad_arguments(tmp_path):
    model = _models.build("semantic_fpn")
    with pytest.raises(ValueError, match="unknown format"):
        export_model(model, torch.zeros(1, 3, 64, 64), "tflite", tmp_path)
    with pytest.raises(ValueError, match="same size"):
        export_model(model, [torch.zeros(3, 64, 64), torch.zeros(3, 64, 96)], "torchscript", tmp_path)
    with pytest.raises(NotImplementedError, match="no deployable form"):
        deployable_model(torch.nn.Conv2d(3, 3, 1).eval())
    with pytest.raises(ValueError, match="eval mode"):
        deployable_model(_models.build("retinanet").train())
    with pytest.raises(FileNotFoundError, match="no exported model"):
        from libdet.export import load_exported

        load_exported(tmp_path / "model.onnx")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_wrong_input_names_the_file(fmt, exported):
    """A runtime's refusal of an input (4 channels for a 3-channel model) comes with the file and the shape."""
    _require(fmt)
    _, exported_model = exported("mask_rcnn_fpn", fmt)
    with pytest.raises(RuntimeError, match=rf"{exported_model.path.name} \({fmt}\) failed on images of shape \(1, 4"):
        exported_model(torch.rand(1, 4, 96, 128) * 255)
