import torch
from torch import nn

from libdet.structures import Boxes, Instances
from libdet.utils.analysis import (
    ActivationCountAnalysis,
    FlopCountAnalysis,
    activation_count_operators,
    flop_count_operators,
    parameter_count,
)


class _TinyDetector(nn.Module):
    """Takes detection inputs (list of dicts), returns Instances: a conv and a linear box head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, batched_inputs):
        results = []
        for x in batched_inputs:
            feat = self.conv(x["image"].float()[None]).mean((2, 3))
            boxes = self.fc(feat)
            results.append({"instances": Instances((x["height"], x["width"]), pred_boxes=Boxes(boxes))})
        return results


def test_flops_of_a_detection_model_match_the_formula():
    model = _TinyDetector()
    inputs = [{"image": torch.rand(3, 8, 10) * 255, "height": 8, "width": 10}]
    conv_flops = 8 * 10 * 4 * 3 * 3 * 3  # one multiply-add per output element per kernel weight
    linear_flops = 4 * 4
    flops = FlopCountAnalysis(model, inputs)
    assert flops.total() == conv_flops + linear_flops
    by_op = flop_count_operators(model, inputs)
    assert by_op["conv"] == conv_flops / 1e9 and by_op["linear"] == linear_flops / 1e9
    assert model.training  # restored


def test_activations_and_parameters():
    model = _TinyDetector().eval()
    inputs = [{"image": torch.rand(3, 8, 10), "height": 8, "width": 10}] * 2
    acts = ActivationCountAnalysis(model, inputs)
    assert acts.total() == 2 * (8 * 10 * 4 + 4)
    assert activation_count_operators(model, inputs)["conv"] == 2 * 8 * 10 * 4 / 1e6
    assert parameter_count(model)[""] == 4 * 3 * 9 + 16


def test_tensor_inputs():
    model = nn.Conv2d(3, 2, 1, bias=False)
    assert FlopCountAnalysis(model, torch.rand(1, 3, 4, 4)).total() == 4 * 4 * 2 * 3
