import unittest

import pytest
import torch
from torch import nn

from libdet.structures import Boxes, Instances
from libdet.utils import testing


def test_random_boxes_are_valid():
    torch.manual_seed(0)
    boxes = testing.random_boxes(500, max_coord=40)
    assert boxes.shape == (500, 4)
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert (sizes >= 1 - 1e-5).all() and (boxes >= 1).all() and (boxes <= 40).all()


def _instances(shift=0.0):
    inst = Instances((10, 20))
    inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 5.0, 6.0]]) + shift)
    inst.scores = torch.tensor([0.5]) + shift
    inst.pred_classes = torch.tensor([3])
    return inst


def test_assert_instances_allclose():
    testing.assert_instances_allclose(_instances(), _instances(1e-7))
    with pytest.raises(AssertionError, match="mine Field pred_boxes differs"):
        testing.assert_instances_allclose(_instances(), _instances(0.1), msg="mine")
    other = _instances()
    other.pred_classes = torch.tensor([2])
    with pytest.raises(AssertionError, match="pred_classes is different"):
        testing.assert_instances_allclose(_instances(), other)
    other = _instances()
    other.remove("scores")
    with pytest.raises(AssertionError, match="Fields are"):
        testing.assert_instances_allclose(_instances(), other)


def test_convert_scripted_instances_reads_private_fields():
    class ScriptedLayout:  # the layout TorchScript-compatible Instances compile to
        _field_names = ["pred_boxes", "scores", "pred_masks"]

        def __init__(self):
            self.image_size = (10, 20)
            self._pred_boxes = Boxes(torch.zeros(1, 4))
            self._scores = torch.ones(1)
            self._pred_masks = None  # unset optional field

    out = testing.convert_scripted_instances(ScriptedLayout())
    assert isinstance(out, Instances) and sorted(out.get_fields()) == ["pred_boxes", "scores"]
    testing.assert_instances_allclose(out, out)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_reload_script_model_keeps_behaviour():
    model = torch.jit.script(nn.Linear(3, 2))
    x = torch.rand(4, 3)
    assert torch.equal(testing.reload_script_model(model)(x), model(x))


def test_min_torch_version():
    assert testing.min_torch_version("1.0") and not testing.min_torch_version("99.0")


def test_skip_decorators():
    assert testing.skipIfUnsupportedMinOpsetVersion(9, 11)(lambda: 1)() == 1
    with pytest.raises(unittest.SkipTest, match="opset >= 12"):
        testing.skipIfUnsupportedMinOpsetVersion(12, 11)(lambda: 1)()
    with pytest.raises(unittest.SkipTest, match="torch >= 99"):
        testing.skipIfUnsupportedMinTorchVersion("99.0")(lambda: 1)()


def test_custom_op_export_registration_only_on_old_torch(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.onnx, "register_custom_op_symbolic", lambda *a: calls.append(("register", *a)))
    monkeypatch.setattr(torch.onnx, "unregister_custom_op_symbolic", lambda *a: calls.append(("unregister", *a)))
    testing.register_custom_op_onnx_export("libdet::op", print, 17, min_version="1.0")  # torch is newer: no-op
    assert calls == []
    testing.register_custom_op_onnx_export("libdet::op", print, 17, min_version="99.0")
    testing.unregister_custom_op_onnx_export("libdet::op", 17, min_version="99.0")
    assert calls == [("register", "libdet::op", print, 17), ("unregister", "libdet::op", 17)]


def test_sample_coco_image_falls_back_to_the_url(tmp_path, monkeypatch):
    from iopath.common.file_io import HTTPURLHandler
    from PIL import Image

    image = tmp_path / "000000000009.jpg"
    Image.new("RGB", (12, 8), (255, 0, 0)).save(image)
    fetched = []

    def fake_download(self, path, force=False, **kwargs):
        fetched.append(path)
        return str(image)

    monkeypatch.setenv("LIBDET_DATASETS", str(tmp_path / "no-datasets"))
    monkeypatch.setattr(HTTPURLHandler, "_get_local_path", fake_download)
    from libdet.data import DatasetCatalog

    monkeypatch.setattr(DatasetCatalog, "get", lambda name: (_ for _ in ()).throw(FileNotFoundError(name)))
    out = testing.get_sample_coco_image()
    assert fetched == [testing.SAMPLE_COCO_IMAGE_URL]
    assert out.shape == (3, 8, 12) and out.dtype == torch.uint8
    assert out[2].float().mean() > 250 and out[0].float().mean() < 5  # red, in BGR order


def test_get_model_no_weights_builds_a_lazy_config_model():
    model = testing.get_model_no_weights("COCO/retinanet_r50.py")
    assert isinstance(model, nn.Module) and type(model).__name__ == "RetinaNet"


def test_has_dynamic_axes():
    pytest.importorskip("onnx", reason="onnx not installed")
    from onnx import TensorProto, helper

    def model(input_shape, output_shape):
        inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [inp], [out])
        return helper.make_model(graph)

    assert testing.has_dynamic_axes(model(["n", "h"], ["n", "h"]))
    assert not testing.has_dynamic_axes(model(["n", 4], ["n", 4]))
