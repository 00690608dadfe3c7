"""The weights a config names (``train.init_checkpoint``), loaded for a tool that needs a trained model."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .detection_checkpoint import DetectionCheckpointer

__all__ = ["load_config_weights"]


def load_config_weights(model: nn.Module, cfg: Any, *, caller: str) -> str:
    """Load ``cfg.train.init_checkpoint`` into ``model`` with :class:`DetectionCheckpointer`.

    Args:
        model: the model built from ``cfg.model``.
        cfg: a LazyConfig (an omegaconf ``DictConfig``).
        caller: the tool's name, which starts the error messages (e.g. ``"demo"``).

    Returns:
        the path or URL of the loaded weights.

    Raises:
        ValueError: ``train.init_checkpoint`` is not set; the message names the trained model of this config
            when ``train.output_dir`` holds a ``model_final.pth``.
        FileNotFoundError: ``train.init_checkpoint`` is a local path that does not exist.
    """
    from omegaconf import OmegaConf

    weights = str(OmegaConf.select(cfg, "train.init_checkpoint", default="") or "")
    if not weights:
        output_dir = OmegaConf.select(cfg, "train.output_dir", default=None)
        final = os.path.join(str(output_dir), "model_final.pth") if output_dir else ""
        hint = f" (the trained model of this config is {final!r})" if final and os.path.isfile(final) else ""
        raise ValueError(f"{caller}: no weights to load: pass train.init_checkpoint=path/to/model.pth{hint}.")
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"{caller}: weights file train.init_checkpoint={weights!r} does not exist.")
    DetectionCheckpointer(model).load(weights)
    return weights
