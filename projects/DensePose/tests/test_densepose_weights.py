"""The DensePose configs build models with exactly the state-dict keys and shapes of detectron2's model zoo."""

import os

import pytest

from libdet.config import LazyConfig, instantiate

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(HERE), "configs")


def _reference(name):
    table = {}
    with open(os.path.join(HERE, name)) as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            table[key] = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
    return table


@pytest.mark.parametrize(
    "config,table",
    [
        ("densepose_rcnn_R_50_FPN_s1x.py", "densepose_rcnn_R_50_FPN_s1x.txt"),
        ("densepose_rcnn_R_50_FPN_DL_WC1M_s1x.py", "densepose_rcnn_R_50_FPN_DL_WC1M_s1x.txt"),
    ],
)
def test_state_dict_matches_detectron2(config, table):
    model = instantiate(LazyConfig.load(os.path.join(CONFIGS, config)).model)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = _reference(table)
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}


def test_detectron2_pkl_loads_as_is(tmp_path):
    """A detectron2 model-zoo style ``.pkl`` (``{"model": {name: ndarray}, "__author__": ...}``) of a DensePose
    model loads into a freshly built one with every tensor in place."""
    import pickle

    import torch
    from densepose_testing import tiny_densepose_config

    from libdet.checkpoint import DetectionCheckpointer

    cfg = tiny_densepose_config("densepose_rcnn_R_50_FPN_DL_WC1M_s1x.py")
    torch.manual_seed(0)
    source = instantiate(cfg.model)
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        state = {k: v.numpy() for k, v in source.state_dict().items()}
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    torch.manual_seed(1)
    target = instantiate(cfg.model)
    DetectionCheckpointer(target).load(str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
