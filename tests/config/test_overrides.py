import pytest
from omegaconf import DictConfig

from libdet.config import ConfigKeyError, LazyConfig
from libdet.config import LazyCall as L


def _cfg() -> DictConfig:
    return DictConfig(
        {
            "model": {"num_classes": 80, "pixel_mean": [1.0, 2.0], "backbone": L("torch.nn.Identity")()},
            "train": {"name": "run", "max_iter": 10, "output_dir": "./out", "amp": {"enabled": False}},
        },
        flags={"allow_objects": True},
    )


def test_every_override_form():
    cfg = _cfg()
    LazyConfig.apply_overrides(
        cfg,
        [
            "model.num_classes=3",
            "model.pixel_mean=[1,2.5,3]",
            "train.name='run 1'",
            'train.output_dir="/tmp/x y"',
            "train.amp.enabled=true",
            "train.max_iter=null",
            "+train.new_key=0.5",
            "++train.forced.deep=abc",
            "++model.num_classes=4",
            "model.backbone._target_=torch.nn.ReLU",
            "+train.mapping={a:1,b:[2]}",
            "~train.amp",
        ],
    )
    assert cfg.model.num_classes == 4 and isinstance(cfg.model.num_classes, int)
    assert list(cfg.model.pixel_mean) == [1, 2.5, 3]
    assert cfg.train.name == "run 1"
    assert cfg.train.output_dir == "/tmp/x y"
    assert cfg.train.max_iter is None
    assert cfg.train.new_key == 0.5
    assert cfg.train.forced.deep == "abc"
    assert cfg.model.backbone._target_ == "torch.nn.ReLU"
    assert cfg.train.mapping == {"a": 1, "b": [2]}
    assert "amp" not in cfg.train


def test_missing_key_names_key_and_closest():
    cfg = _cfg()
    with pytest.raises(ConfigKeyError) as info:
        LazyConfig.apply_overrides(cfg, ["model.num_clases=3"])
    message = str(info.value)
    assert "no key 'model.num_clases'" in message
    assert "Closest existing keys: model.num_classes" in message
    assert "+model.num_clases" in message


def test_add_requires_plus_and_plus_requires_new():
    cfg = _cfg()
    with pytest.raises(ConfigKeyError, match="no key 'train.extra'"):
        LazyConfig.apply_overrides(cfg, ["train.extra=1"])
    with pytest.raises(ConfigKeyError, match="already exists"):
        LazyConfig.apply_overrides(cfg, ["+train.max_iter=1"])
    with pytest.raises(ConfigKeyError, match="no key 'train.nothing'"):
        LazyConfig.apply_overrides(cfg, ["~train.nothing"])


def test_key_below_a_value():
    cfg = _cfg()
    with pytest.raises(ConfigKeyError, match="'train.max_iter' holds 10, not a config node"):
        LazyConfig.apply_overrides(cfg, ["train.max_iter.x=1"])


def test_parse_errors_and_sweeps():
    cfg = _cfg()
    with pytest.raises(ValueError, match="Cannot parse override 'model.pixel_mean=\\[1'"):
        LazyConfig.apply_overrides(cfg, ["model.pixel_mean=[1"])
    with pytest.raises(ValueError, match="sweep"):
        LazyConfig.apply_overrides(cfg, ["model.num_classes=1,2"])


def test_no_eval_of_values():
    cfg = _cfg()
    with pytest.raises(ValueError):
        LazyConfig.apply_overrides(cfg, ["train.name=__import__('os').system('true')"])
    LazyConfig.apply_overrides(cfg, ["train.name='__import__(\"os\")'"])
    assert cfg.train.name == '__import__("os")'


def test_interpolation_values_stay_interpolations():
    cfg = _cfg()
    LazyConfig.apply_overrides(cfg, ["+train.classes=${model.num_classes}"])
    assert cfg.train.classes == 80
    cfg.model.num_classes = 5
    assert cfg.train.classes == 5
