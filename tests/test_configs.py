"""Every config under ``configs/`` and ``projects/*/configs/`` loads, saves and instantiates its model.

Building a full-size model (ResNet-50 and up) costs a second or two on CPU and no forward pass is run, so model
configs are instantiated as written: what a user would get. The giants (ViT-H, MViTv2-H: 600M+ parameters) spend
tens of seconds filling their random initial weights, which tells nothing about the config; they are built on the
``meta`` device (every constructor runs, no memory is filled).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from libdet.config import LazyConfig, instantiate

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(
    str(path.relative_to(REPO_ROOT))
    for pattern in ("configs/**/*.py", "projects/*/configs/**/*.py")
    for path in REPO_ROOT.glob(pattern)
    if path.name != "__init__.py"
)


GIANT = 300_000_000  # parameters


def _instantiate_model(model_cfg):
    try:
        with torch.device("meta"):
            shell = instantiate(model_cfg)
    except RuntimeError:  # a constructor that reads tensor values (e.g. .item()) cannot run on meta
        shell = None
    if shell is not None and sum(p.numel() for p in shell.parameters()) > GIANT:
        return shell
    return instantiate(model_cfg)


@pytest.mark.skipif(not CONFIG_FILES, reason="no config files yet")
@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_config_loads_and_builds_model(config_file, tmp_path):
    cfg = LazyConfig.load(str(REPO_ROOT / config_file))
    if "model" not in cfg:
        pytest.skip(f"{config_file} defines no model (a data/optim/schedule config)")
    model = _instantiate_model(cfg.model)
    assert isinstance(model, torch.nn.Module), f"{config_file}: model is {type(model).__name__}"
    assert sum(p.numel() for p in model.parameters()) > 0
    # A saved config reproduces the run: it must survive a save/load round trip as YAML.
    saved = LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert saved.endswith(".yaml"), f"{config_file} does not round-trip through YAML (saved as {saved})"
