import torch
from omegaconf import OmegaConf

from libdet.config import LazyCall as L
from libdet.config import LazyConfig, instantiate


def test_to_py_is_readable_and_loads_back(config_tree, tmp_path):
    cfg = LazyConfig.load(str(config_tree / "COCO/sub/leaf.py"))
    cfg.head.act = torch.nn.ReLU  # a class as a plain value, imported by name
    cfg.train["odd key"] = {"not an identifier": 1}
    text = LazyConfig.to_py(cfg, prefix="")
    assert "from libdet.config import LazyCall as L" in text
    assert "from torch.nn import Linear" in text
    assert "layer=L(Linear)(" in text
    assert "act=ReLU" in text
    assert "out_features='${..num_classes}'" in text
    path = tmp_path / "printed.py"
    path.write_text(text)
    loaded = LazyConfig.load(str(path))
    expected = OmegaConf.to_container(cfg, resolve=False)
    assert OmegaConf.to_container(loaded, resolve=False) == expected
    assert instantiate(loaded.head.layer).out_features == 7


def test_to_py_prefix_and_name_clashes():
    cfg = OmegaConf.create(
        {"a": L(torch.nn.Linear)(in_features=1, out_features=1), "b": L("torch.nn.modules.linear.Linear")()},
        flags={"allow_objects": True},
    )
    cfg.c = L("libdet.config.instantiate")(cfg=1)
    text = LazyConfig.to_py(cfg)
    assert "cfg.a = L(Linear)(" in text
    assert "cfg.c = L(instantiate)(" in text
    lines = text.splitlines()
    assert sum(line.startswith("from ") for line in lines) >= 3
