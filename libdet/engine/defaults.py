"""Common pieces of a training / evaluation script: argument parser, run set-up, writers, predictors, DDP."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from libdet.config import LazyConfig
from libdet.utils import comm
from libdet.utils.env import collect_env_info, seed_all_rng
from libdet.utils.file_io import PathManager
from libdet.utils.logger import setup_logger

__all__ = [
    "BatchPredictor",
    "DefaultPredictor",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "resolve_device",
]


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The command line of libdet's training scripts.

    ``opts`` collects everything after the named options as config overrides (``train.max_iter=10
    model.roi_heads.num_classes=5``), applied with :meth:`LazyConfig.apply_overrides`.
    """
    parser = argparse.ArgumentParser(
        epilog=epilog
        or f"""
Examples:

Run on a single machine:
    $ {sys.argv[0]} --num-gpus 8 --config-file cfg.py

Change some config options:
    $ {sys.argv[0]} --config-file cfg.py train.max_iter=100 optimizer.lr=0.001

Run on multiple machines:
    (machine0)$ {sys.argv[0]} --machine-rank 0 --num-machines 2 --dist-url <URL> [--other-flags]
    (machine1)$ {sys.argv[0]} --machine-rank 1 --num-machines 2 --dist-url <URL> [--other-flags]
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in the output directory when there is one; otherwise start from "
        "train.init_checkpoint",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of processes (GPUs) per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialisation URL for torch.distributed; 'auto' picks a free local port (single machine only)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides 'path.key=value' at the end of the command (see LazyConfig.apply_overrides)",
    )
    return parser


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


def default_setup(cfg: Any, args: argparse.Namespace) -> None:
    """Prepare a run: output directory, loggers, environment report, saved config, seed, cudnn flag.

    * creates ``cfg.train.output_dir`` (when set) and logs ``libdet`` and ``fvcore`` to ``<output_dir>/log.txt``;
    * logs the rank, the environment (:func:`collect_env_info`), the command line and the config file;
    * saves the resolved config to ``<output_dir>/config.yaml`` (main process), so the run can be reproduced;
    * seeds every RNG with ``cfg.train.seed`` (+ rank) or, when unset / negative, a random logged seed;
    * sets ``torch.backends.cudnn.benchmark`` from ``cfg.train.cudnn_benchmark`` (off for ``--eval-only``).

    Args:
        cfg: the lazy config (``DictConfig``).
        args: parsed :func:`default_argument_parser` arguments.
    """
    output_dir = _cfg_select(cfg, "train.output_dir")
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
        written = LazyConfig.save(cfg, os.path.join(output_dir, "config.yaml"))
        logger.info("Full config saved to %s", written)

    seed = _cfg_select(cfg, "train.seed", -1)
    seed_all_rng(None if seed < 0 else int(seed) + rank)
    if seed >= 0:
        logger.info("Seeded all RNGs with %d (train.seed %d + rank %d)", int(seed) + rank, seed, rank)

    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = bool(_cfg_select(cfg, "train.cudnn_benchmark", False))


def default_writers(output_dir: str, max_iter: int | None = None) -> list:
    """The default event writers: terminal printer, ``<output_dir>/metrics.json`` and TensorBoard.

    Args:
        output_dir: directory for ``metrics.json`` and the TensorBoard event files.
        max_iter: total iterations, for the printer's ETA.
    """
    from libdet.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

    PathManager.mkdirs(output_dir)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


class DefaultPredictor:
    """Run a built model on one image: resize to the test size, convert channels, forward, results at input size.

    Args:
        model: a built libdet model (e.g. ``GeneralizedRCNN``) with weights loaded; put in eval mode.
        min_size_test: shorter side the image is resized to.
        max_size_test: upper bound on the longer side after resizing.
        input_format: channel order the *model* expects (``"BGR"`` or ``"RGB"``); as in detectron2, images
            given to the predictor are BGR (what ``cv2.imread`` / ``read_image(format="BGR")`` return) and
            are flipped for an RGB model.
        metadata: the dataset's metadata (class names, ...), kept for visualisation.

    Example::

        pred = DefaultPredictor(model, input_format="BGR")
        outputs = pred(cv2.imread("input.jpg"))  # {"instances": Instances} in the image's own size
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        min_size_test: int = 800,
        max_size_test: int = 1333,
        input_format: str = "BGR",
        metadata: Any = None,
    ) -> None:
        from libdet.data.transforms import ResizeShortestEdge

        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"{type(self).__name__}: input_format must be 'BGR' or 'RGB', got {input_format!r}.")
        self.model = model.eval()
        self.input_format = input_format
        self.metadata = metadata
        self.aug = ResizeShortestEdge([min_size_test, min_size_test], max_size_test)

    def _prepare(self, original_image: np.ndarray, index: int = 0) -> dict[str, Any]:
        """One model input dict ``{"image": (3, H', W') tensor, "height": H, "width": W}``."""
        if not isinstance(original_image, np.ndarray) or original_image.ndim != 3 or original_image.shape[2] != 3:
            shape = getattr(original_image, "shape", type(original_image).__name__)
            raise ValueError(f"{type(self).__name__}: image {index} must be an (H, W, 3) numpy array, got {shape}.")
        if self.input_format == "RGB":
            original_image = np.ascontiguousarray(original_image[:, :, ::-1])
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": image, "height": height, "width": width}

    def __call__(self, original_image: np.ndarray) -> dict[str, Any]:
        """Predict on one ``(H, W, 3)`` BGR image.

        Returns:
            The model's output for the image, e.g. ``{"instances": Instances}`` with boxes in ``(H, W)`` pixels.
        """
        with torch.no_grad():
            return self.model([self._prepare(original_image)])[0]


class BatchPredictor(DefaultPredictor):
    """:class:`DefaultPredictor` for a list of images: each is resized, then one forward runs on the batch.

    Takes the same arguments as :class:`DefaultPredictor`.
    """

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:  # type: ignore[override]
        """Predict on a list of ``(H_i, W_i, 3)`` BGR images; returns one output dict per image, in order."""
        if isinstance(images, np.ndarray):
            raise TypeError(f"{type(self).__name__}: expected a list of images, got one array; wrap it in a list.")
        if len(images) == 0:
            return []
        with torch.no_grad():
            return list(self.model([self._prepare(image, i) for i, image in enumerate(images)]))


def create_ddp_model(model: nn.Module, *, fp16_compression: bool = False, **kwargs: Any) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when there are several processes.

    Args:
        model: the model, already on this process's device.
        fp16_compression: all-reduce gradients in float16 (less communication).
        kwargs: passed to ``DistributedDataParallel`` (``device_ids`` defaults to this process's GPU).

    Returns:
        ``model`` itself with one process, else the DDP-wrapped model.
    """
    if comm.get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if "device_ids" not in kwargs and next(model.parameters(), torch.empty(0)).is_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


def resolve_device(device: str | None, setting: str = "train.device") -> torch.device:
    """The torch device a setting names: ``"auto"`` (or unset) is this process's GPU when CUDA is available, else
    the CPU; any other value is parsed by ``torch.device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``; a bare ``"cuda"``
    is this process's local GPU).

    Args:
        device: the value.
        setting: the name of the setting (config key or command-line flag) for error messages.

    Raises:
        ValueError: naming ``setting`` when the value is not a device or asks for CUDA without CUDA.
    """
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", comm.get_local_rank() % max(torch.cuda.device_count(), 1))
        return torch.device("cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError as e:
        raise ValueError(f"{setting}={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{setting}={device!r} but CUDA is not available; use {setting}=auto or cpu.")
        if dev.index is None:
            dev = torch.device("cuda", comm.get_local_rank() % torch.cuda.device_count())
    return dev
