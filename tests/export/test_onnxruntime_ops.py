"""libdet's onnxruntime custom ops (``csrc/onnxruntime``, ``libdet.export.onnxruntime_ops``): the op against
torchvision's roi_align, and R-CNN models exported with them against the standard ONNX export.

The tests that build the library skip without onnxruntime's C/C++ headers (``ONNXRUNTIME_ROOT``, see
docs/deployment.md); CI fetches the headers and runs them (``.ci/run``, step 4). The ones on what happens without
the headers run everywhere."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from libdet.export import export_model, load_exported
from libdet.export import onnxruntime_ops as ort_ops
from tests.export import _models

ort = pytest.importorskip(
    "onnxruntime", reason="libdet's onnxruntime ops need onnxruntime (pip install 'libdet[export]')"
)


def _without_headers(monkeypatch) -> None:
    for name in ("ONNXRUNTIME_ROOT", "ONNXRUNTIME_INCLUDE_DIR", "LIBDET_ONNXRUNTIME_OPS"):
        monkeypatch.delenv(name, raising=False)
    if ort_ops.onnxruntime_headers() is not None:
        pytest.skip(f"onnxruntime's headers are installed system-wide ({ort_ops.onnxruntime_headers()})")


@pytest.fixture(scope="module")
def library():
    """The built op library; skips when onnxruntime's headers (or a compiler) are missing."""
    try:
        return ort_ops.onnxruntime_ops_library()
    except RuntimeError as e:
        pytest.skip(f"libdet's onnxruntime ops cannot be built here: {str(e).splitlines()[0]}")


def test_missing_headers_are_named(monkeypatch):
    _without_headers(monkeypatch)
    with pytest.raises(RuntimeError, match="ONNXRUNTIME_ROOT.*docs/deployment.md"):
        ort_ops.onnxruntime_ops_library()


def test_missing_prebuilt_library_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("LIBDET_ONNXRUNTIME_OPS", str(tmp_path / "missing.so"))
    with pytest.raises(RuntimeError, match="LIBDET_ONNXRUNTIME_OPS=.*missing.so: no such file"):
        ort_ops.onnxruntime_ops_library()


def test_compile_error_is_reported_and_leaves_no_library(monkeypatch, tmp_path):
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("needs a C++ compiler (c++ on PATH, or CXX)")
    headers = tmp_path / "include"
    headers.mkdir()
    for name in ("onnxruntime_cxx_api.h", "onnxruntime_c_api.h"):
        (headers / name).write_text("#error not onnxruntime\n")
    monkeypatch.delenv("LIBDET_ONNXRUNTIME_OPS", raising=False)
    monkeypatch.setenv("ONNXRUNTIME_INCLUDE_DIR", str(headers))
    monkeypatch.setenv("LIBDET_OPS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="(?s)failed to compile.*error not onnxruntime"):
        ort_ops.onnxruntime_ops_library()
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_export_without_library_fails_before_writing(monkeypatch, tmp_path):
    _without_headers(monkeypatch)
    sample, _ = _models.images("mask_rcnn_fpn")
    with pytest.raises(RuntimeError, match="export_model: onnx_custom_ops=True: .*headers"):
        export_model(_models.build("mask_rcnn_fpn"), sample, "onnx", tmp_path, onnx_custom_ops=True)
    assert not list(tmp_path.iterdir())


def test_custom_ops_only_for_onnx(tmp_path):
    sample, _ = _models.images("mask_rcnn_fpn")
    with pytest.raises(ValueError, match="onnx_custom_ops=True applies to format 'onnx' only"):
        export_model(_models.build("mask_rcnn_fpn"), sample, "torch_export", tmp_path, onnx_custom_ops=True)


def _roi_align_graph(opset: int, nodes, x_type=None):
    from onnx import TensorProto, helper

    x_type = TensorProto.FLOAT if x_type is None else x_type
    inputs = [
        helper.make_tensor_value_info("X", x_type, [1, 8, 16, 16]),
        helper.make_tensor_value_info("rois", x_type, [None, 4]),
        helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [None]),
    ]
    outputs = [helper.make_tensor_value_info(n.output[0], x_type, None) for n in nodes]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_rewrite_replaces_standard_roi_align():
    from onnx import TensorProto, helper

    def roi_align(out, **attrs):
        return helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], [out], name=out, **attrs)

    model = _roi_align_graph(
        18,
        [
            roi_align("box", output_height=7, output_width=7, sampling_ratio=0, spatial_scale=0.25),
            roi_align("legacy", coordinate_transformation_mode="output_half_pixel", output_height=14),
            roi_align("max", mode="max"),  # another operation: kept
        ],
    )
    assert ort_ops.use_libdet_roi_align(model) == 2
    by_output = {n.output[0]: n for n in model.graph.node}
    box, legacy, kept = by_output["box"], by_output["legacy"], by_output["max"]
    assert (box.domain, legacy.domain, kept.domain) == ("libdet", "libdet", "")
    transpose = by_output[box.input[0]]
    assert transpose.op_type == "Transpose" and list(transpose.input) == ["X"]
    assert list(transpose.attribute[0].ints) == [0, 2, 3, 1]
    assert list(box.input[1:]) == ["rois", "batch_indices"]
    attrs = lambda node: {a.name: helper.get_attribute_value(a) for a in node.attribute}  # noqa: E731
    assert attrs(box) == dict(
        output_height=7, output_width=7, sampling_ratio=0, aligned=1, spatial_scale=pytest.approx(0.25)
    )
    assert attrs(legacy)["aligned"] == 0 and attrs(legacy)["output_height"] == 14 and attrs(legacy)["output_width"] == 1
    assert ("libdet", 1) in {(o.domain, o.version) for o in model.opset_import}
    # The nodes stay in topological order: each Transpose right before its RoiAlign.
    order = [n.output[0] for n in model.graph.node]
    assert order.index(box.input[0]) == order.index("box") - 1

    # Before opset 16 RoiAlign had no coordinate_transformation_mode: it behaved as output_half_pixel.
    old = _roi_align_graph(10, [roi_align("y")])
    assert ort_ops.use_libdet_roi_align(old) == 1
    assert attrs(next(n for n in old.graph.node if n.op_type == "RoiAlign"))["aligned"] == 0

    # float64 maps stay with the standard op (libdet's is float32 only); nothing to replace leaves no trace.
    double = _roi_align_graph(18, [roi_align("y")], x_type=TensorProto.DOUBLE)
    assert ort_ops.use_libdet_roi_align(double) == 0
    assert [n.domain for n in double.graph.node] == [""]
    assert all(o.domain != "libdet" for o in double.opset_import)


def _roi_align_session(library, **attributes):
    """A session running one ``libdet.RoiAlign`` on a channels-last map."""
    from onnx import TensorProto, helper

    node = helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], ["Y"], domain=ort_ops.ONNX_DOMAIN, **attributes)
    graph = helper.make_graph(
        [node],
        "roi_align",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, None, None]),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, [None, None]),  # the kernel checks it
            helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(ort_ops.ONNX_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    ort_ops.register_onnxruntime_ops(options, library)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _random_rois(g: torch.Generator, n: int, batch: int, size: float) -> torch.Tensor:
    """``(n, 5)`` rois (batch_index, x0, y0, x1, y1), some partly or wholly outside the image, some tiny."""
    xy = torch.rand(n, 2, generator=g) * size * 1.2 - size * 0.1
    wh = torch.rand(n, 2, generator=g) ** 2 * size * 0.8
    wh[:3] = torch.tensor([[0.0, 0.0], [0.2, 5.0], [size * 2, size * 2]])  # empty, thin, larger than the image
    index = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([index, xy, xy + wh], dim=1)


@pytest.mark.parametrize(
    "aligned, sampling_ratio, output_size, spatial_scale",
    [(True, 0, (7, 7), 0.25), (False, 2, (14, 14), 0.125), (True, -1, (5, 3), 1.0)],
)
def test_roi_align_equals_torchvision(library, aligned, sampling_ratio, output_size, spatial_scale):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 19, 23, 31, generator=g)  # C = 19: no vector-width multiple
    rois = _random_rois(g, 60, batch=2, size=31 / spatial_scale)
    session = _roi_align_session(
        library,
        output_height=output_size[0],
        output_width=output_size[1],
        sampling_ratio=sampling_ratio,
        aligned=int(aligned),
        spatial_scale=spatial_scale,
    )
    (got,) = session.run(
        None,
        {
            "X": features.permute(0, 2, 3, 1).contiguous().numpy(),
            "rois": rois[:, 1:].contiguous().numpy(),
            "batch_indices": rois[:, 0].long().numpy(),
        },
    )
    expected = roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    assert got.shape == tuple(expected.shape)
    # The kernel's arithmetic is torchvision's, step for step: the same floats, not merely close ones.
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=0)


def test_roi_align_edge_cases(library):
    session = _roi_align_session(
        library, output_height=2, output_width=2, sampling_ratio=0, aligned=1, spatial_scale=1.0
    )
    features = np.random.default_rng(0).standard_normal((1, 8, 8, 4), dtype=np.float32)
    no_rois = session.run(
        None, {"X": features, "rois": np.zeros((0, 4), np.float32), "batch_indices": np.zeros(0, np.int64)}
    )[0]
    assert no_rois.shape == (0, 4, 2, 2)
    rois = np.array([[0, 0, 4, 4]], np.float32)
    empty_map = session.run(
        None, {"X": np.zeros((1, 0, 8, 4), np.float32), "rois": rois, "batch_indices": np.zeros(1, np.int64)}
    )[0]
    assert empty_map.shape == (1, 4, 2, 2) and not empty_map.any()
    with pytest.raises(Exception, match=r"batch_indices\[0\] is 3, but X has 1 images"):
        session.run(None, {"X": features, "rois": rois, "batch_indices": np.array([3], np.int64)})
    with pytest.raises(Exception, match="output_height and output_width must be positive, got 0 x 2"):
        _roi_align_session(library, output_height=0, output_width=2, sampling_ratio=0, aligned=1, spatial_scale=1.0)
    with pytest.raises(Exception, match=r"rois must be \[R, 4\]"):
        session.run(None, {"X": features, "rois": np.zeros((1, 5), np.float32), "batch_indices": np.zeros(1, np.int64)})


@pytest.mark.slow  # two ONNX exports of a tiny model
@pytest.mark.parametrize("family", ["mask_rcnn_fpn", "mask_rcnn_c4", "keypoint_rcnn_fpn"])
def test_rcnn_with_custom_ops_equals_standard_onnx(library, tmp_path, family):
    import onnx

    model = _models.build(family)
    sample, batches = _models.images(family)
    standard = export_model(model, sample, "onnx", tmp_path / "standard")
    custom = export_model(model, sample, "onnx", tmp_path / "custom", onnx_custom_ops=True)

    nodes = [(n.domain, n.op_type) for n in onnx.load(str(custom.path)).graph.node]
    assert ("libdet", "RoiAlign") in nodes and ("", "RoiAlign") not in nodes
    assert custom.info["onnx_custom_ops"] == "libdet"
    for images in batches:
        expected, got = standard(images), custom(images)
        assert len(expected["scores"]) > 0
        for name in expected:  # libdet's RoiAlign gives onnxruntime's (= torchvision's) values exactly
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)

    reloaded = load_exported(custom.path, custom_ops_library=library)  # an explicit library, as deployed
    torch.testing.assert_close(reloaded(batches[0])["boxes"], standard(batches[0])["boxes"], rtol=0, atol=0)


@pytest.mark.slow  # one ONNX export of the tiny semantic FPN
def test_model_without_roi_align_gets_a_plain_file(library, tmp_path, caplog):
    import onnx

    sample, (images, *_) = _models.images("semantic_fpn")
    with caplog.at_level("WARNING", logger="libdet.export.api"):
        exported = export_model(_models.build("semantic_fpn"), sample, "onnx", tmp_path, onnx_custom_ops=True)
    assert "has no RoIAlign; onnx_custom_ops=True changed nothing" in caplog.text
    assert "onnx_custom_ops" not in exported.info  # the file runs in any onnxruntime
    assert all(o.domain != "libdet" for o in onnx.load(str(exported.path)).opset_import)
    assert exported(images)["sem_seg"].shape[0] == 1
