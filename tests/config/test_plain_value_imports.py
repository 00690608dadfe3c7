"""Config files share plain values (numbers, strings) by importing them, as in detectron2."""

import textwrap

import pytest
from omegaconf import DictConfig, ListConfig

from libdet.config import ConfigKeyError, LazyConfig


@pytest.fixture
def value_tree(tmp_path):
    def write(rel, text):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    write(
        "base.py",
        """
        lr = 0.02
        name = "base"
        steps = [10, 20]
        optimizer = dict(lr=lr, name=name)
        """,
    )
    write(
        "sub/leaf.py",
        """
        from ..base import lr, name, optimizer
        from .. import base

        optimizer.lr = lr * 2
        train = dict(name=name + "_leaf", max_iter=base.steps[-1])
        warmup = 0.001  # a plain value of this file: not part of the loaded config
        """,
    )
    write("star.py", "from .base import *  # noqa: F403\ntrain = dict(lr=lr * 10)  # noqa: F405\n")
    return tmp_path


def test_plain_values_imported_from_another_config(value_tree):
    cfg = LazyConfig.load(str(value_tree / "sub/leaf.py"))
    # Only the loaded file's own public configs; the imported plain values and its own are filtered out.
    assert sorted(cfg.keys()) == ["optimizer", "train"]
    assert cfg.optimizer.lr == 0.04 and cfg.optimizer.name == "base"
    assert cfg.train.name == "base_leaf" and cfg.train.max_iter == 20


def test_plain_values_can_be_loaded_by_key(value_tree):
    base = str(value_tree / "base.py")
    assert LazyConfig.load(base, "lr") == 0.02
    lr, name = LazyConfig.load(base, ("lr", "name"))
    assert (lr, name) == (0.02, "base")
    steps = LazyConfig.load(base, "steps")
    assert isinstance(steps, ListConfig) and list(steps) == [10, 20]
    assert isinstance(LazyConfig.load(base, "optimizer"), DictConfig)
    # names the leaf imported from the base are its names too
    assert LazyConfig.load(str(value_tree / "sub/leaf.py"), ("name", "warmup")) == ("base", 0.001)


def test_missing_plain_key_names_the_file_and_its_keys(value_tree):
    with pytest.raises(ConfigKeyError, match=r"base\.py.*defines no key 'rl'.*lr"):
        LazyConfig.load(str(value_tree / "base.py"), "rl")


def test_loading_the_importer_does_not_change_the_base(value_tree):
    LazyConfig.load(str(value_tree / "sub/leaf.py"))
    assert LazyConfig.load(str(value_tree / "base.py")).optimizer.lr == 0.02


def test_star_import_brings_plain_values_and_configs(value_tree):
    cfg = LazyConfig.load(str(value_tree / "star.py"))
    assert sorted(cfg.keys()) == ["optimizer", "steps", "train"]  # lists are configs too; numbers are not
    assert cfg.train.lr == pytest.approx(0.2) and cfg.optimizer.name == "base"
