"""tools/analyze_model.py: fvcore counts on a module given directly and on models built from a lazy config."""

import importlib.util
import os
import runpy
import sys
import textwrap

import pytest
import torch
import torchvision
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


am = load_tool("analyze_model")


def test_resnet50_flops_and_parameters():
    torch.manual_seed(0)
    res = am.analyze(torchvision.models.resnet50(), ["flop", "parameter"], height=224, width=224)
    assert res["input_format"] == "tensor" and res["input_shapes"] == [(1, 3, 224, 224)]
    assert abs(res["flop"] - 4.1e9) / 4.1e9 < 0.05
    assert res["parameter"] == 25_557_032
    assert "layer4" in res["flop_table"] and "25.6M" in res["parameter_table"]


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 5))


def test_exact_counts_on_a_tiny_module():
    res = am.analyze(tiny_cnn(), list(am.TASKS), height=16, width=16, batch_size=2)
    conv = 2 * 8 * 16 * 16 * 3 * 9  # batch * out elements * (in_channels * k * k) multiply-adds
    linear = 2 * 8 * 16 * 16 * 5
    assert res["flop"] == conv + linear
    assert res["parameter"] == 8 * 3 * 9 + 8 * 16 * 16 * 5 + 5
    assert res["activation"] == 2 * 8 * 16 * 16 + 2 * 5  # conv and linear outputs
    assert "Conv2d" in res["structure"]
    with pytest.raises(ValueError, match="unknown task"):
        am.analyze(tiny_cnn(), ["speed"])


class TinyDetector(nn.Module):
    """Takes detectron2-format inputs and returns Instances, like a meta-architecture."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)

    def forward(self, batched_inputs):
        from libdet.structures import Boxes, Instances

        outs = []
        for x in batched_inputs:
            assert set(x) == {"image", "height", "width"}
            feat = self.conv(x["image"][None])
            inst = Instances((x["height"], x["width"]))
            score = feat.mean().reshape(1)
            inst.pred_boxes = Boxes(torch.cat([score, score, score + 1, score + 1]).reshape(1, 4))
            inst.scores = score.sigmoid()
            outs.append({"instances": inst})
        return outs


def test_detection_input_format_is_picked_and_traced():
    model = TinyDetector()
    assert am.choose_input_format(model) == "detection"
    assert am.choose_input_format(tiny_cnn()) == "tensor"
    res = am.analyze(model, ["flop"], height=20, width=24, batch_size=2)
    assert res["input_format"] == "detection" and res["input_shapes"] == [(3, 20, 24), (3, 20, 24)]
    assert res["flop"] >= 2 * 4 * 20 * 24 * 27  # the two convolutions (plus small elementwise ops)
    assert res["flop"] < 2 * 4 * 20 * 24 * 27 * 1.05


def write_config(tmp_path, body):
    path = tmp_path / "cfg.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_config_file_with_overrides(tmp_path, capsys):
    cfg = write_config(
        tmp_path,
        """
        import torchvision
        from libdet.config import LazyCall as L

        model = L(torchvision.models.resnet18)(num_classes=10)
    """,
    )
    res = am.main(["--config-file", cfg, "--tasks", "parameter", "flop", "--input-size", "64", "64"])
    res3 = am.main(["--config-file", cfg, "--tasks", "parameter", "structure", "model.num_classes=3"])
    assert res["parameter"] - res3["parameter"] == 7 * (512 + 1)
    assert "out_features=3" in res3["structure"]
    assert res["input_shapes"] == [(1, 3, 64, 64)]
    out = capsys.readouterr().out
    assert "Total GFlops" in out and "Total parameters: 11,181,642" in out


def test_config_file_detection_model(tmp_path):
    cfg = write_config(
        tmp_path,
        """
        from libdet.config import LazyCall as L
        from tests.tools.test_analyze_model import TinyDetector

        model = L(TinyDetector)(channels=2)
    """,
    )
    res = am.main(["--config-file", cfg, "--tasks", "flop", "activation", "--input-size", "16", "16"])
    assert res["input_format"] == "detection"
    assert res["flop"] >= 2 * 16 * 16 * 27 and res["activation"] >= 2 * 16 * 16
    tensor_res = am.main(["--config-file", cfg, "--tasks", "parameter", "--input-format", "tensor"])
    assert tensor_res["parameter"] == 2 * 27 + 2


def test_config_without_model_is_a_clear_error(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, "train = dict(max_iter=1)\n")
    with pytest.raises(ValueError, match="cfg.py.*no 'model' key"):
        am.build_model(cfg)
    # run as a script: the error is printed without a traceback, exit status 1
    monkeypatch.setattr(sys, "argv", ["analyze_model.py", "--config-file", cfg])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(os.path.join(ROOT, "tools", "analyze_model.py"), run_name="__main__")
    assert "no 'model' key" in str(exc.value.code)
