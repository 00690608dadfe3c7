"""Every config under ``configs/`` and ``projects/*/configs/`` loads, saves and instantiates its model.

Building a full-size model (ResNet-50 and up) costs a second or two on CPU and no forward pass is run, so every
model config is instantiated as written: what a user would get.
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


@pytest.mark.skipif(not CONFIG_FILES, reason="no config files yet")
@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_config_loads_and_builds_model(config_file, tmp_path):
    cfg = LazyConfig.load(str(REPO_ROOT / config_file))
    if "model" not in cfg:
        pytest.skip(f"{config_file} defines no model (a data/optim/schedule config)")
    model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Module), f"{config_file}: model is {type(model).__name__}"
    assert sum(p.numel() for p in model.parameters()) > 0
    # A saved config reproduces the run: it must survive a save/load round trip as YAML.
    saved = LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert saved.endswith(".yaml"), f"{config_file} does not round-trip through YAML (saved as {saved})"
