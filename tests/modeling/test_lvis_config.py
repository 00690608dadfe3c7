"""The federated-loss switch of ``configs/LVIS/mask_rcnn_r50.py``: off by default; switched on, the box predictor
gets class weights from the training set's category frequencies, read when the model is built and never
when the config is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from libdet.config import LazyConfig, instantiate
from libdet.data.catalog import DatasetCatalog, MetadataCatalog
from libdet.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from libdet.structures import Boxes, Instances

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "LVIS" / "mask_rcnn_r50.py"
NAME = "_test_fake_lvis_train"
# Category ids of the annotations of 4 images: class 0 is in 3 images, class 1 in 1, class 2 in 2, class 3 in none.
IMAGES = [[0, 0, 2], [0, 1], [2], [0]]


@pytest.fixture
def fake_lvis():
    calls = []

    def load():
        calls.append(1)
        return [
            {"file_name": f"{i}.jpg", "image_id": i, "annotations": [{"category_id": c, "iscrowd": 0} for c in cats]}
            for i, cats in enumerate(IMAGES)
        ]

    DatasetCatalog.register(NAME, load)
    MetadataCatalog.get(NAME).set(thing_classes=["a", "b", "c", "d"])
    yield calls
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _switch_on(cfg):
    """The switch, as written in the config's docstring: one command-line override."""
    cfg = LazyConfig.apply_overrides(cfg, ["model.roi_heads.box_predictor.use_fed_loss=True"])
    return cfg


def _load(num_classes=4):
    cfg = LazyConfig.load(str(CONFIG))
    cfg.dataloader.train.dataset.names = NAME
    cfg.model.roi_heads.num_classes = num_classes
    cfg.model.roi_heads.box_predictor.fed_loss_num_classes = 3
    return cfg


def test_switch_is_off_by_default(fake_lvis):
    cfg = _load()
    predictor = instantiate(cfg.model.roi_heads.box_predictor)
    assert isinstance(predictor, FastRCNNOutputLayers)
    assert not predictor.use_fed_loss and not predictor.use_sigmoid_ce
    assert not hasattr(predictor, "fed_loss_cls_weights")
    assert fake_lvis == []  # the dataset was never read


def test_switch_on_builds_fed_loss_from_category_frequencies(fake_lvis, tmp_path):
    cfg = _load()
    cfg = _switch_on(cfg)
    assert fake_lvis == []  # loading and switching read no data
    # The switched config still saves (no lambdas) and reloads with the switch on.
    LazyConfig.save(cfg, str(tmp_path / "lvis.yaml"))
    cfg = LazyConfig.load(str(tmp_path / "lvis.yaml"))
    assert fake_lvis == []

    predictor = instantiate(cfg.model.roi_heads.box_predictor)
    assert fake_lvis == [1]  # read once, when the predictor was built
    assert predictor.use_fed_loss and predictor.use_sigmoid_ce
    torch.testing.assert_close(predictor.fed_loss_cls_weights, torch.tensor([3.0, 1.0, 2.0, 0.0]) ** 0.5)

    # The loss is the federated one: with 3 classes per iteration and gt classes {0, 2} (+ background) no
    # negative is sampled, so only the logits of classes 0 and 2 count.
    proposals = Instances((32, 32))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 9, 9]]))
    proposals.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 1, 1]]))
    proposals.gt_classes = torch.tensor([0, 2, 4])
    scores, deltas = predictor(torch.randn(3, 1024))
    losses = predictor.losses((scores, deltas), [proposals])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(scores[:, [0, 2]], target, reduction="sum") / 3
    torch.testing.assert_close(losses["loss_cls"], expected)
