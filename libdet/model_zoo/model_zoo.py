"""Find built-in configs by their path under ``configs/``, load them, and build models with trained weights.

The configs ship inside the installed package (``libdet/model_zoo/configs``, copied by ``setup.py``); in a
source checkout or an editable install they are read from the repository's ``configs/``.

Trained weights are detectron2's published model-zoo checkpoints, for the libdet configs whose architecture
(state-dict keys, shapes and pre-processing) is identical to the detectron2 config that trained them.

detectron2's own names work too: ``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"`` (a YAML config shipped
with libdet, loaded with ``get_cfg().merge_from_file``) and detectron2's lazy-config names that libdet's configs
stand for (see :mod:`libdet.model_zoo.detectron2_zoo`).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch

from . import detectron2_zoo

__all__ = ["get", "get_checkpoint_url", "get_config", "get_config_file"]

_URL_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

# libdet config path -> "<detectron2 config path>/<model id>/<file>" of the checkpoint it reproduces
_CHECKPOINTS: dict[str, str] = {
    "COCO/mask_rcnn_r50.py": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/137260431/model_final_a54504.pkl",
    "COCO/mask_rcnn_c4_r50.py": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x/137259246/model_final_9243eb.pkl",
    "COCO/mask_rcnn_r101.py": "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x/138205316/model_final_a3ec72.pkl",
    "COCO/mask_rcnn_x101_32x8d.py": "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x/139653917/model_final_2d9806.pkl",
    "COCO/faster_rcnn_r50.py": "COCO-Detection/faster_rcnn_R_50_FPN_1x/137257794/model_final_b275ba.pkl",
    "COCO/retinanet_r50.py": "COCO-Detection/retinanet_R_50_FPN_1x/190397773/model_final_bfca0b.pkl",
}


def _config_roots() -> list[Path]:
    """Folders that may hold the configs: the packaged copy first, then the source checkout's ``configs/``."""
    package_dir = Path(__file__).resolve().parent
    return [package_dir / "configs", package_dir.parent.parent / "configs"]


def _normalize(config_path: str) -> str:
    path = config_path.replace(os.sep, "/").lstrip("/")
    if path.startswith("configs/"):
        path = path[len("configs/") :]
    return path


def _available_configs(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)).replace(os.sep, "/")
        for p in root.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    )


def get_config_file(config_path: str) -> str:
    """The real path of a built-in config.

    Args:
        config_path: path relative to ``configs/``, e.g. ``"COCO/mask_rcnn_r50.py"``.

    Raises:
        FileNotFoundError: when no such config exists; the message lists the closest config names.
    """
    if not isinstance(config_path, str) or not config_path:
        raise TypeError(f"model_zoo.get_config_file: config_path must be a non-empty string, got {config_path!r}.")
    rel = _normalize(config_path)
    if rel.endswith(".yaml"):
        return _yaml_config_file(config_path, rel)
    if (detectron2_zoo.lazy_config_root() / rel).is_file():  # one of detectron2's lazy configs
        return str(detectron2_zoo.lazy_config_root() / rel)
    rel = detectron2_zoo.LAZY_ALIASES.get(rel, rel)
    roots = [r for r in _config_roots() if r.is_dir()]
    for root in roots:
        candidate = root / rel
        if candidate.is_file():
            return str(candidate)
    available = sorted({name for root in roots for name in _available_configs(root)})
    close = difflib.get_close_matches(rel, available, n=5, cutoff=0.4)
    hint = f" Closest: {close}." if close else f" Available: {available}."
    where = ", ".join(str(r) for r in roots) or "no configs folder found"
    raise FileNotFoundError(f"model_zoo: config {config_path!r} not found (searched {where}).{hint}")


def _yaml_config_file(config_path: str, rel: str) -> str:
    root = detectron2_zoo.yaml_config_root()
    candidate = root / rel
    if candidate.is_file():
        return str(candidate)
    available = sorted(str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*.yaml"))
    close = difflib.get_close_matches(rel, available, n=5, cutoff=0.4)
    hint = f" Closest: {close}." if close else f" Available: {available}."
    raise FileNotFoundError(f"model_zoo: YAML config {config_path!r} not found in {root}.{hint}")


def get_checkpoint_url(config_path: str) -> str:
    """URL of the trained weights for a built-in config (a detectron2 model-zoo checkpoint).

    Raises:
        RuntimeError: when the config has no published checkpoint; lists the configs that have one.
    """
    rel = _normalize(config_path)
    name = rel.removesuffix(".yaml").removesuffix(".py")
    if name in detectron2_zoo.CHECKPOINTS:  # a detectron2 config name
        return f"{detectron2_zoo.URL_PREFIX}{name}/{detectron2_zoo.CHECKPOINTS[name]}"
    rel = detectron2_zoo.LAZY_ALIASES.get(rel, rel)
    if rel not in _CHECKPOINTS:
        raise RuntimeError(
            f"model_zoo: no trained checkpoint is published for config {config_path!r}. Configs with trained "
            f"weights: {sorted(_CHECKPOINTS)}."
        )
    return _URL_PREFIX + _CHECKPOINTS[rel]


def get_config(config_path: str, trained: bool = False) -> Any:
    """Load a built-in config with :meth:`LazyConfig.load`.

    Args:
        config_path: path relative to ``configs/``, e.g. ``"COCO/mask_rcnn_r50.py"``.
        trained: set ``train.init_checkpoint`` to the trained weights' URL (see :func:`get_checkpoint_url`);
            otherwise the config's own ``init_checkpoint`` (usually ImageNet weights, or none) is kept.

        A YAML name (``*.yaml``) gives a ``CfgNode`` (``get_cfg()`` merged with the file), whose ``MODEL.WEIGHTS``
        ``trained`` sets.

    Returns:
        The config (``omegaconf.DictConfig``, or ``CfgNode`` for a YAML config).
    """
    from libdet.config import LazyConfig, get_cfg

    if _normalize(config_path).endswith(".yaml"):
        yaml_cfg = get_cfg()
        yaml_cfg.merge_from_file(get_config_file(config_path))
        if trained:
            yaml_cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
        return yaml_cfg
    cfg = LazyConfig.load(get_config_file(config_path))
    if trained:
        url = get_checkpoint_url(config_path)
        if "train" not in cfg or "init_checkpoint" not in cfg.train:
            raise ValueError(f"model_zoo: config {config_path!r} has no train.init_checkpoint to set.")
        cfg.train.init_checkpoint = url
    return cfg


def get(config_path: str, trained: bool = False, device: str | None = None) -> torch.nn.Module:
    """Build the model of a built-in config, with trained weights when ``trained``.

    Args:
        config_path: path relative to ``configs/``, e.g. ``"COCO/mask_rcnn_r50.py"``.
        trained: load the published weights (downloaded through ``PathManager`` and cached).
        device: device of the model; default ``"cuda"`` when available, else ``"cpu"``.

        For a YAML config, as in detectron2, ``MODEL.WEIGHTS`` is loaded also when not ``trained`` (usually
        ImageNet weights of the backbone) unless it is empty.

    Returns:
        The model (in training mode, as built), on ``device``.

    Raises:
        RuntimeError: no checkpoint is published for the config, or it could not be downloaded/loaded.
    """
    from libdet.checkpoint import DetectionCheckpointer
    from libdet.config import instantiate

    cfg = get_config(config_path, trained=trained)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    is_yaml = not hasattr(cfg, "model")
    if is_yaml:
        from libdet.modeling.meta_arch.build import build_model

        cfg.MODEL.DEVICE = device
        model = build_model(cfg)
    else:
        model = instantiate(cfg.model).to(device)
    if trained or (is_yaml and cfg.MODEL.WEIGHTS):
        url = cfg.MODEL.WEIGHTS if is_yaml else cfg.train.init_checkpoint
        try:
            DetectionCheckpointer(model).load(url)
        except Exception as e:
            raise RuntimeError(
                f"model_zoo.get({config_path!r}, trained=True): could not load the trained weights from {url}: "
                f"{type(e).__name__}: {e}"
            ) from e
    return model
