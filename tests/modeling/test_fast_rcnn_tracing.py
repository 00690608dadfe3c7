"""FastRCNNOutputLayers.predict_boxes / predict_probs trace with torch.jit.trace into graphs that follow the
number of proposals (as detectron2's tracing tests check)."""

import pytest
import torch
from torch import nn

from libdet.layers import ShapeSpec
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.roi_heads import FastRCNNOutputLayers
from libdet.structures import Boxes, Instances

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit:FutureWarning")


def _predictor(num_classes=5, cls_agnostic=False):
    torch.manual_seed(0)
    return FastRCNNOutputLayers(
        ShapeSpec(channels=8),
        box2box_transform=Box2BoxTransform(weights=(10, 10, 5, 5)),
        num_classes=num_classes,
        cls_agnostic_bbox_reg=cls_agnostic,
    )


class _PredictBoxes(nn.Module):
    def __init__(self, predictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, deltas, boxes):
        proposals = Instances((10, 10), proposal_boxes=Boxes(boxes))
        return self.predictor.predict_boxes((None, deltas), [proposals])


class _PredictProbs(nn.Module):
    def __init__(self, predictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, scores, boxes):
        proposals = Instances((10, 10), proposal_boxes=Boxes(boxes))
        return self.predictor.predict_probs((scores, None), [proposals])


def _boxes(n, gen):
    xy = torch.rand(n, 2, generator=gen) * 50
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 30], dim=1)


@pytest.mark.parametrize("cls_agnostic", [False, True])
def test_predict_boxes_traces_for_any_number_of_proposals(cls_agnostic):
    model = _PredictBoxes(_predictor(cls_agnostic=cls_agnostic))
    k = 1 if cls_agnostic else 5
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.randn(10, 4 * k, generator=gen), _boxes(10, gen)))
        for n in (10, 5, 20):
            deltas, boxes = torch.randn(n, 4 * k, generator=gen), _boxes(n, gen)
            (out,) = traced(deltas, boxes)
            (expected,) = model(deltas, boxes)
            assert out.shape == (n, 4 * k)
            torch.testing.assert_close(out, expected)


def test_predict_probs_traces_for_any_number_of_proposals():
    model = _PredictProbs(_predictor())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.randn(10, 6, generator=gen), _boxes(10, gen)))
        for n in (10, 5, 20):
            scores, boxes = torch.randn(n, 6, generator=gen), _boxes(n, gen)
            (out,) = traced(scores, boxes)
            assert out.shape == (n, 6)
            torch.testing.assert_close(out, torch.softmax(scores, dim=-1))
