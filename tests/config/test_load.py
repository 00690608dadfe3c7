import pytest
from omegaconf import DictConfig

from libdet.config import ConfigKeyError, LazyConfig, instantiate


def test_load_py_tree_with_relative_imports(config_tree):
    cfg = LazyConfig.load(str(config_tree / "COCO/sub/leaf.py"))
    assert isinstance(cfg, DictConfig)
    assert sorted(cfg.keys()) == ["dataloader", "head", "schedule", "train"]
    assert cfg.head.num_classes == 7
    assert cfg.head.layer.in_features == 8  # edited by the sibling file bigger.py
    assert cfg.head.layer.out_features == 7  # interpolation follows the edit
    assert cfg.train.max_iter == 20
    assert cfg.schedule.max_iter == 10  # load_rel gives a fresh copy, not the edited one
    layer = instantiate(cfg.head.layer)
    assert (layer.in_features, layer.out_features) == (8, 7)


def test_each_load_is_independent(config_tree):
    first = LazyConfig.load(str(config_tree / "common/models/net.py"))
    second = LazyConfig.load(str(config_tree / "common/models/net.py"))
    first.head.num_classes = 100
    assert second.head.num_classes == 3


def test_load_keys(config_tree):
    path = str(config_tree / "COCO/sub/leaf.py")
    head = LazyConfig.load(path, "head")
    assert head.num_classes == 7
    train, dataloader = LazyConfig.load(path, ("train", "dataloader"))
    assert train.max_iter == 20 and dataloader.batch_size == 2
    with pytest.raises(ConfigKeyError, match="defines no key 'modle'.*head"):
        LazyConfig.load(path, "modle")


def test_private_names_and_non_configs_are_dropped(config_tree):
    cfg = LazyConfig.load(str(config_tree / "common/data/coco.py"))
    assert list(cfg.keys()) == ["dataloader"]
    assert list(cfg.dataloader.names) == ["a", "b"]


def test_load_yaml(config_tree):
    cfg = LazyConfig.load(str(config_tree / "LVIS/leaf.yaml"))
    assert cfg.train.max_iter == 3
    assert type(instantiate(cfg.model)).__name__ == "Identity"


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("x: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        LazyConfig.load(str(path))


def test_missing_relative_import_names_the_file(tmp_path):
    (tmp_path / "a.py").write_text("from .missing_base import model\n")
    with pytest.raises(ImportError) as info:
        LazyConfig.load(str(tmp_path / "a.py"))
    assert "a.py" in str(info.value) and "missing_base.py" in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist.py"):
        LazyConfig.load(str(tmp_path / "does_not_exist.py"))
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(ValueError, match=r"expected a \.py or \.yaml"):
        LazyConfig.load(str(tmp_path / "cfg.json"))
    (tmp_path / "broken.py").write_text("model = dict(\n")
    with pytest.raises(SyntaxError) as info:
        LazyConfig.load(str(tmp_path / "broken.py"))
    assert info.value.filename.endswith("broken.py")


def test_config_import_does_not_leak(config_tree):
    import builtins

    original = builtins.__import__
    LazyConfig.load(str(config_tree / "COCO/sub/leaf.py"))
    assert builtins.__import__ is original
