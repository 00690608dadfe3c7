"""Preparing a run: :func:`default_setup` (output directory, loggers, saved config, seeds) and
:func:`default_writers` (where the training metrics go)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from omegaconf import OmegaConf

from libdet.config import CfgNode, LazyConfig
from libdet.utils import comm
from libdet.utils.env import collect_env_info, seed_all_rng
from libdet.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from libdet.utils.file_io import PathManager, atomic_write
from libdet.utils.logger import setup_logger

__all__ = ["default_setup", "default_writers"]


def _cfg_select(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg``'s value at the dotted ``key`` (e.g. ``"train.output_dir"``), or ``default`` when absent."""
    if OmegaConf.is_config(cfg):
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value
    node = cfg
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif hasattr(node, part):
            node = getattr(node, part)
        else:
            return default
    return default if node is None else node


def _run_settings(cfg: Any) -> tuple[str, int, bool, str]:
    """``(output_dir, seed, cudnn_benchmark, float32_matmul_precision)`` of a lazy config (``train.*``) or of a
    detectron2 YAML config (``OUTPUT_DIR``, ``SEED``, ``CUDNN_BENCHMARK``, ``FLOAT32_PRECISION``)."""
    if isinstance(cfg, CfgNode):
        return cfg.OUTPUT_DIR, int(cfg.SEED), bool(cfg.CUDNN_BENCHMARK), cfg.get("FLOAT32_PRECISION", "")
    return (
        _cfg_select(cfg, "train.output_dir"),
        int(_cfg_select(cfg, "train.seed", -1)),
        bool(_cfg_select(cfg, "train.cudnn_benchmark", False)),
        "",
    )


def _save_config(cfg: Any, output_dir: str) -> str:
    path = os.path.join(output_dir, "config.yaml")
    if isinstance(cfg, CfgNode):
        with atomic_write(path, "w") as f:
            f.write(cfg.dump())
        return path
    return LazyConfig.save(cfg, path)


def default_setup(cfg: Any, args: argparse.Namespace) -> None:
    """Prepare a run: output directory, loggers, environment report, saved config, seed, cudnn flag.

    * creates the output directory (when set) and logs ``libdet`` and ``fvcore`` to ``<output_dir>/log.txt``;
    * logs the rank, the environment (:func:`collect_env_info`), the command line and the config file;
    * saves the resolved config to ``<output_dir>/config.yaml`` (main process), so the run can be reproduced;
    * seeds every RNG with the seed (+ rank) or, when unset / negative, a random logged seed;
    * sets ``torch.backends.cudnn.benchmark`` (off for ``--eval-only``).

    Args:
        cfg: the lazy config (``train.output_dir``, ``train.seed``, ``train.cudnn_benchmark``); or, as in
            detectron2, a YAML config (``CfgNode``: ``OUTPUT_DIR``, ``SEED``, ``CUDNN_BENCHMARK``,
            ``FLOAT32_PRECISION``).
        args: parsed :func:`default_argument_parser` arguments.
    """
    output_dir, seed, cudnn_benchmark, float32_precision = _run_settings(cfg)
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        PathManager.mkdirs(output_dir)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    logger = setup_logger(output_dir, distributed_rank=rank)

    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", args)
    config_file = getattr(args, "config_file", "")
    if config_file:
        if not PathManager.isfile(config_file):
            raise FileNotFoundError(f"default_setup: --config-file {config_file!r} does not exist.")
        with PathManager.open(config_file, "r") as f:
            logger.info("Contents of args.config_file=%s:\n%s", config_file, f.read())

    if comm.is_main_process() and output_dir:
        logger.info("Full config saved to %s", _save_config(cfg, output_dir))

    seed_all_rng(None if seed < 0 else seed + rank)
    if seed >= 0:
        logger.info("Seeded all RNGs with %d (seed %d + rank %d)", seed + rank, seed, rank)
    if float32_precision:
        torch.set_float32_matmul_precision(float32_precision)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cudnn_benchmark


def default_writers(output_dir: str, max_iter: int | None = None) -> list:
    """The default event writers: terminal printer, ``<output_dir>/metrics.json`` and TensorBoard.

    Args:
        output_dir: directory for ``metrics.json`` and the TensorBoard event files.
        max_iter: total iterations, for the printer's ETA.
    """
    PathManager.mkdirs(output_dir)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]
