import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from libdet.checkpoint import load_config_weights


def test_load_config_weights(tmp_path):
    source = nn.Linear(3, 2)
    path = tmp_path / "model.pth"
    torch.save({"model": source.state_dict()}, path)
    target = nn.Linear(3, 2)
    cfg = OmegaConf.create({"train": {"init_checkpoint": str(path)}})
    assert load_config_weights(target, cfg, caller="tool") == str(path)
    assert torch.equal(target.weight, source.weight)


def test_load_config_weights_errors_name_the_key(tmp_path):
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"^tool: no weights to load: pass train.init_checkpoint=path/to/model.pth\.$"):
        load_config_weights(model, OmegaConf.create({"train": {"init_checkpoint": ""}}), caller="tool")
    # The trained model of this config is named when there is one.
    torch.save({"model": model.state_dict()}, tmp_path / "model_final.pth")
    cfg = OmegaConf.create({"train": {"init_checkpoint": None, "output_dir": str(tmp_path)}})
    with pytest.raises(ValueError, match="the trained model of this config is .*model_final.pth"):
        load_config_weights(model, cfg, caller="tool")
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(
        FileNotFoundError, match=r"tool: weights file train.init_checkpoint='.*nope.pth' does not exist"
    ):
        load_config_weights(model, OmegaConf.create({"train": {"init_checkpoint": missing}}), caller="tool")
