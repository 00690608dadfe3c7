import logging

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from libdet.config import LazyCall as L
from libdet.config import LazyConfig, instantiate


def _local_factory():  # importable by path: tests.config.test_save._local_factory
    return 1


def test_save_load_round_trip(config_tree, tmp_path):
    cfg = LazyConfig.load(str(config_tree / "COCO/sub/leaf.py"))
    cfg.train.optional = None
    cfg.train.ratio = 0.25
    cfg.train.flag = True
    cfg.train.text = "with: colon, 'quotes', # hash and\nnewline"
    path = LazyConfig.save(cfg, str(tmp_path / "out" / "config.yaml"))
    assert path.endswith("config.yaml")
    loaded = LazyConfig.load(path)
    expected = OmegaConf.to_container(cfg, resolve=False)
    expected["head"]["layer"]["_target_"] = "torch.nn.Linear"
    assert OmegaConf.to_container(loaded, resolve=False) == expected
    # interpolations are kept as interpolations, not resolved values
    assert loaded.head.layer._get_node("out_features")._value() == "${..num_classes}"
    assert instantiate(loaded.head.layer).out_features == 7


def test_target_written_as_shortest_public_path(tmp_path):
    from libdet.config import lazy

    cfg = DictConfig({"obj": L(lazy.LazyConfig.load)(filename="x")}, flags={"allow_objects": True})
    path = LazyConfig.save(cfg, str(tmp_path / "c.yaml"))
    text = open(path).read()
    assert "_target_: libdet.config.LazyConfig.load" in text


def test_unserializable_config_is_pickled_and_key_named(tmp_path, caplog):
    cfg = DictConfig(
        {"train": {"fn": lambda x: x + 1, "tensor": torch.zeros(2), "ok": 1}, "model": L(_local_factory)()},
        flags={"allow_objects": True},
    )
    with caplog.at_level(logging.WARNING, logger="libdet.config.lazy"):
        path = LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert path == str(tmp_path / "config.yaml.pkl")
    assert not (tmp_path / "config.yaml").exists()
    message = caplog.text
    assert "train.fn" in message and "train.tensor" in message and "train.ok" not in message
    with pytest.raises(ValueError, match="allow_pickle=True"):
        LazyConfig.load(path)
    loaded = LazyConfig.load(path, allow_pickle=True)
    assert loaded.train.fn(1) == 2
    assert instantiate(loaded.model) == 1


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    target.write_text("previous: 1\n")
    cfg = DictConfig({"a": 1})

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(OmegaConf, "to_yaml", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        LazyConfig.save(cfg, str(target))
    assert target.read_text() == "previous: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
