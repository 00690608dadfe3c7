"""Int8 post-training quantization: norm folding is exact, the PT2E-quantized backbone is int8 and its features
and detections track the float model's, the saved program reloads, and onnxruntime's quantized export runs.

The model is the calibrated random-weight tiny Mask R-CNN of ``tests/export/_models.py`` with random
(non-identity) FrozenBatchNorm statistics, so that folding and quantization have something to get wrong.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from torch import nn

from libdet.layers import Conv2d, FrozenBatchNorm2d, get_norm
from libdet.quantization import (
    ExportedPredictor,
    QuantizedBackbone,
    fold_conv_norms,
    load_quantized_backbone,
    quantize_onnx,
    quantize_pt2e,
    record_backbone_inputs,
    save_quantized_backbone,
)
from libdet.structures import pairwise_iou
from tests.export import _models


def _require_torchao():
    pytest.importorskip("torchao", reason="PT2E quantization needs torchao (pip install 'libdet[quantization]')")


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + 1.5 * torch.rand(n, generator=g)


def _batches(seed: int, sizes) -> list[list[dict]]:
    """One-image batches of noisy images with bright rectangles (0-255, BGR)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for h, w in sizes:
        image = torch.rand(3, h, w, generator=g) * 60
        for _ in range(3):
            y, x = int(torch.randint(0, h - 32, (1,), generator=g)), int(torch.randint(0, w - 32, (1,), generator=g))
            image[:, y : y + 32, x : x + 32] = torch.rand(3, 1, 1, generator=g) * 255
        batches.append([{"image": image, "height": h, "width": w}])
    return batches


CALIB_SIZES = [(96, 128), (128, 96), (112, 144), (128, 128), (96, 160), (144, 112), (128, 160), (112, 112)]
TEST_SIZES = [(120, 136), (100, 150), (136, 104)]


@pytest.fixture(scope="module")
def float_model():
    model = _models.build("mask_rcnn_fpn")
    _randomize_norms(model.backbone)
    return model


@pytest.fixture(scope="module")
def quantized(float_model):
    _require_torchao()
    torch.manual_seed(0)
    return quantize_pt2e(float_model, _batches(1, CALIB_SIZES), compile=False)


def _agreement(reference, other, top: int = 20, min_iou: float = 0.8) -> float:
    """Fraction of the ``top`` best reference detections that ``other`` reproduces: same class, IoU >= min_iou."""
    ref = reference[reference.scores.argsort(descending=True)[:top]]
    if len(ref) == 0 or len(other) == 0:
        return float(len(ref) == len(other))
    iou = pairwise_iou(ref.pred_boxes, other.pred_boxes)
    iou[ref.pred_classes[:, None] != other.pred_classes[None, :]] = 0
    return float((iou.max(dim=1).values >= min_iou).float().mean())


def test_fold_conv_norms_keeps_outputs():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Conv2d(3, 8, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(8), activation=nn.ReLU())
            self.b = Conv2d(8, 8, 3, stride=2, bias=True, norm=nn.BatchNorm2d(8))
            self.c = Conv2d(8, 32, 1, norm=get_norm("GN", 32))  # not foldable: kept after the convolution
            self.listed = [self.a, self.b]  # a plain list, as FPN keeps its convolutions

        def forward(self, x):
            for conv in self.listed:
                x = conv(x)
            return self.c(x)

    net = Net().eval()
    _randomize_norms(net)
    folded = fold_conv_norms(copy.deepcopy(net))
    x = torch.randn(2, 3, 20, 24)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
    assert type(folded.a.conv) is nn.Conv2d and folded.a.norm is None
    assert folded.listed[0] is folded.a and folded.listed[1] is folded.b
    assert isinstance(folded.c.norm, nn.GroupNorm)
    assert not any(isinstance(m, Conv2d) for m in folded.modules())


def test_fold_keeps_the_fpn_backbone(float_model):
    backbone = float_model.backbone
    folded = fold_conv_norms(copy.deepcopy(backbone))
    x = _batches(5, [(128, 160)])[0][0]["image"][None] / 60
    ref, out = backbone(x), folded(x)
    assert list(out) == list(ref)
    for name in ref:
        torch.testing.assert_close(out[name], ref[name], rtol=1e-4, atol=1e-4)


def test_pt2e_backbone_is_int8(float_model, quantized):
    program = quantized.backbone.program
    convs = [n for n in program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    num_float_convs = sum(isinstance(m, nn.Conv2d) for m in float_model.backbone.modules())
    assert len(convs) == num_float_convs
    for conv in convs:  # int8 activations in, per-channel int8 weights
        act, weight = conv.args[0], conv.args[1]
        assert "dequantize_per_tensor" in str(act.target), conv
        assert "dequantize_per_channel" in str(weight.target), conv


def test_pt2e_is_a_drop_in_backbone(float_model, quantized):
    qb = quantized.backbone
    assert isinstance(qb, QuantizedBackbone)
    assert type(float_model.backbone).__name__ == "FPN"  # the float model is left unchanged
    assert qb.output_shape() == float_model.backbone.output_shape()
    assert qb.size_divisibility == float_model.backbone.size_divisibility
    assert qb.padding_constraints == float_model.backbone.padding_constraints
    quantized.eval()  # as inference_on_dataset does: an exported program alone would refuse it
    with pytest.raises(RuntimeError, match="inference-only"):
        quantized.train()
    quantized.eval()


def test_pt2e_features_track_float(float_model, quantized):
    # other sizes than calibration, and a batch of two: the program has dynamic batch, height and width
    inputs = record_backbone_inputs(float_model, _batches(2, TEST_SIZES) + [sum(_batches(3, [(128, 128)] * 2), [])])
    assert [x.shape[0] for x in inputs] == [1, 1, 1, 2]
    with torch.no_grad():
        for x in inputs:
            ref, out = float_model.backbone(x), quantized.backbone(x)
            for name in ref:
                assert out[name].shape == ref[name].shape
                rel = (out[name] - ref[name]).norm() / ref[name].norm()
                assert rel < 0.1, (name, tuple(x.shape), float(rel))


def test_pt2e_detections_track_float(float_model, quantized):
    with torch.no_grad():
        for batch in _batches(4, TEST_SIZES):
            ref = float_model(batch)[0]["instances"]
            out = quantized(batch)[0]["instances"]
            assert out.image_size == ref.image_size
            assert len(ref) > 0
            assert _agreement(ref, out) >= 0.75, (len(ref), len(out))


def test_pt2e_save_and_load(float_model, quantized, tmp_path):
    path = save_quantized_backbone(quantized.backbone, tmp_path / "backbone_int8.pt2")
    assert path.is_file() and not list(tmp_path.glob(".*"))  # no temporary file left
    reloaded = load_quantized_backbone(path, copy.deepcopy(float_model), compile=False)
    x = record_backbone_inputs(float_model, _batches(6, [(112, 144)]))[0]
    with torch.no_grad():
        a, b = quantized.backbone(x), reloaded.backbone(x)
    for name in a:
        torch.testing.assert_close(b[name], a[name])
    with pytest.raises(FileNotFoundError, match="no quantized backbone"):
        load_quantized_backbone(tmp_path / "missing.pt2", copy.deepcopy(float_model))


def test_pt2e_bad_calibration(float_model):
    with pytest.raises(ValueError, match="no calibration batch"):
        record_backbone_inputs(float_model, [])
    with pytest.raises(ValueError, match="has no `backbone`"):
        record_backbone_inputs(nn.Linear(2, 2), _batches(0, [(64, 64)]))


@pytest.mark.slow
def test_pt2e_compiled_matches_uncompiled(float_model):
    """Inductor's int8 kernels give the reference quantized program's results (to rounding)."""
    _require_torchao()
    calib = _batches(1, CALIB_SIZES[:4])
    eager = quantize_pt2e(float_model, calib, compile=False)
    compiled = quantize_pt2e(float_model, calib, compile=True)
    for x in record_backbone_inputs(float_model, _batches(2, TEST_SIZES[:2])):
        a, b = eager.backbone(x), compiled.backbone(x)
        for name in a:
            scale = a[name].abs().max()
            assert (a[name] - b[name]).abs().max() <= 0.05 * scale, name


def _require_onnx():
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'libdet[export]')")
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime quantization needs onnxruntime (pip install 'libdet[export]')"
    )


def _export_and_quantize(root, model, size):
    from libdet.export import export_model

    sample = _batches(7, [size])[0][0]["image"]
    exported = export_model(model, sample, "onnx", root / "float")
    calib = [b[0] for b in _batches(1, CALIB_SIZES)]
    return exported, quantize_onnx(root / "float", calib, root / "int8")


def _assert_qdq_convs(path) -> None:
    """QDQ format: every convolution reads dequantized int8 activations and weights."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        assert all(producers[i].op_type == "DequantizeLinear" for i in conv.input[:2]), conv.name


@pytest.fixture(scope="module")
def onnx_semantic(tmp_path_factory):
    """Semantic FPN (the quickest family to export): float and int8 ONNX files, and the root folder."""
    _require_onnx()
    root = tmp_path_factory.mktemp("onnx_semantic")
    return (root, *_export_and_quantize(root, _models.build("semantic_fpn"), (128, 128)))


@pytest.fixture(scope="module")
def onnx_detector(tmp_path_factory, float_model):
    _require_onnx()
    return _export_and_quantize(tmp_path_factory.mktemp("onnx_detector"), float_model, (128, 128))


def test_onnx_quantized_segmentation_tracks_float(onnx_semantic):
    _, exported, quantized = onnx_semantic
    _assert_qdq_convs(quantized.path)
    assert quantized.info["quantization"]["format"] == "QDQ"
    assert quantized.output_names == exported.output_names
    for batch in _batches(4, TEST_SIZES):
        image = batch[0]["image"][None]
        ref, out = exported(image)["sem_seg"], quantized(image)["sem_seg"]
        assert out.shape == ref.shape
        assert (out - ref).norm() / ref.norm() < 0.1
        assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9


@pytest.mark.slow
def test_onnx_quantized_detections_track_float(onnx_detector):
    exported, quantized = onnx_detector
    _assert_qdq_convs(quantized.path)
    float_predictor, int8_predictor = ExportedPredictor(exported), ExportedPredictor(quantized)
    agreements = []
    for batch in _batches(4, TEST_SIZES) + _batches(5, TEST_SIZES):
        ref, out = float_predictor(batch)[0]["instances"], int8_predictor(batch)[0]["instances"]
        assert len(ref) > 0
        agreements.append(_agreement(ref, out))
    # The random network's scores are close together, so int8 rounding reorders some of the top 20 on every
    # image (0.5-0.9 of them kept per image, ~0.7 on average, folded FrozenBN or not); broken scales or
    # ranges keep almost none. (A trained model keeps its AP: docs/quantization.md.)
    assert min(agreements) >= 0.4 and sum(agreements) / len(agreements) >= 0.6, agreements


@pytest.mark.slow
def test_exported_predictor_rescales_to_the_original_size(onnx_detector):
    exported, _ = onnx_detector
    batch = _batches(8, [(128, 96)])[0]
    batch[0].update(height=256, width=192)  # the network input is half the original size
    small = ExportedPredictor(exported)([{"image": batch[0]["image"]}])[0]["instances"]
    big = ExportedPredictor(exported)(batch)[0]["instances"]
    assert big.image_size == (256, 192)
    assert len(big) == len(small) > 0
    torch.testing.assert_close(big.pred_boxes.tensor, small.pred_boxes.tensor * 2)
    assert big.pred_masks.shape == (len(big), 256, 192) and big.pred_masks.dtype == torch.bool


def test_quantize_onnx_bad_paths(onnx_semantic, tmp_path):
    root = onnx_semantic[0]
    image = [_batches(0, [(64, 64)])[0][0]]
    with pytest.raises(FileNotFoundError, match="model.onnx is missing"):
        quantize_onnx(tmp_path / "nothing", image, tmp_path / "out")
    with pytest.raises(ValueError, match="must differ"):
        quantize_onnx(root / "float", image, root / "float")
    custom_ops = tmp_path / "custom_ops"
    shutil.copytree(root / "float", custom_ops)
    info = json.loads((custom_ops / "export_info.json").read_text())
    (custom_ops / "export_info.json").write_text(json.dumps({**info, "onnx_custom_ops": "libdet"}))
    with pytest.raises(ValueError, match="quantize a standard export and pass onnx_custom_ops=True"):
        quantize_onnx(custom_ops, image, tmp_path / "out")


@pytest.mark.slow
def test_onnx_quantized_with_libdet_roi_align_equals_standard(onnx_detector, tmp_path):
    import onnx

    from libdet.export.onnxruntime_ops import onnxruntime_ops_library

    try:
        onnxruntime_ops_library()
    except RuntimeError as e:
        pytest.skip(f"libdet's onnxruntime ops cannot be built here: {str(e).splitlines()[0]}")
    exported, quantized = onnx_detector
    calib = [b[0] for b in _batches(1, CALIB_SIZES)]  # the fixture's calibration: MinMax ranges are deterministic
    custom = quantize_onnx(exported.path.parent, calib, tmp_path / "int8", onnx_custom_ops=True)
    assert custom.info["onnx_custom_ops"] == "libdet"
    nodes = [(n.domain, n.op_type) for n in onnx.load(str(custom.path)).graph.node]
    assert ("libdet", "RoiAlign") in nodes and ("", "RoiAlign") not in nodes
    _assert_qdq_convs(custom.path)
    for batch in _batches(4, TEST_SIZES):
        image = batch[0]["image"][None]
        expected, got = quantized(image), custom(image)
        assert len(expected["scores"]) > 0
        for name in expected:  # the int8 graph feeds RoiAlign float maps: libdet's op gives the same values
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
