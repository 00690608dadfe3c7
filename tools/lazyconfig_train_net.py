#!/usr/bin/env python
"""Train or evaluate a model described by a lazy config (``configs/**/*.py``).

Usage::

    python tools/lazyconfig_train_net.py --config-file configs/COCO/mask_rcnn_r50.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file cfg.py train.max_iter=100 optimizer.lr=0.001
    python tools/lazyconfig_train_net.py --config-file cfg.py --resume          # continue the last checkpoint
    python tools/lazyconfig_train_net.py --config-file cfg.py --eval-only train.init_checkpoint=model.pth

The config has the top-level keys ``model``, ``dataloader`` (``train``, ``test``, ``evaluator``), ``optimizer``
(its ``params.model`` is filled with the built model), ``lr_multiplier`` (a fvcore ``ParamScheduler``) and
``train`` (see ``configs/common/train.py``).

``--eval-only`` loads ``train.init_checkpoint`` and evaluates. Every evaluation (``--eval-only``, every
``train.eval_period`` iterations and after training) writes its results to ``<output_dir>/eval_results.json``.
``--resume`` is exact: model, optimizer, LR schedule, grad scaler, EMA, iteration, data-loader position and RNG
states all come from the last checkpoint in ``train.output_dir``, so the run continues as if uninterrupted.
After training, ``model_final.pth`` holds the weights and ``metrics.json`` the logged scalars (one JSON line
per written iteration; the final evaluation's results are logged there too).

The logic lives in importable functions (:func:`setup`, :func:`do_train`, :func:`do_test`, :func:`main`), so the
tool can also be driven from Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.engine import (
    AMPTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    hooks,
    launch,
    resolve_device,
)
from libdet.evaluation import inference_on_dataset, print_csv_format
from libdet.utils import comm
from libdet.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from libdet.utils.file_io import atomic_write

logger = logging.getLogger("libdet.tools.lazyconfig_train_net")

__all__ = ["build_writers", "do_test", "do_train", "main", "resolve_device", "setup"]

_PRECISIONS = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _train_opt(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.train.<key>`` (dotted), or ``default`` when the config does not set it."""
    node = cfg.train
    for part in key.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def build_writers(output_dir: str, max_iter: int, window_size: int = 20) -> list[Any]:
    """Terminal printer, ``<output_dir>/metrics.json`` and TensorBoard (when ``tensorboard`` is installed).

    Args:
        output_dir: where ``metrics.json`` and the event files go.
        max_iter: total iterations (for the ETA).
        window_size: iterations in the median that smooths losses (1: raw per-iteration values).
    """
    os.makedirs(output_dir, exist_ok=True)
    writers: list[Any] = [
        CommonMetricPrinter(max_iter, window_size=window_size),
        JSONWriter(os.path.join(output_dir, "metrics.json"), window_size=window_size),
    ]
    try:
        writers.append(TensorboardXWriter(output_dir, window_size=window_size))
    except ImportError as e:
        logger.warning(f"Not writing TensorBoard events: {e}")
    return writers


def do_test(cfg: Any, model: torch.nn.Module) -> dict[str, Any]:
    """Run ``model`` on ``dataloader.test`` and evaluate with ``dataloader.evaluator`` (when the config has one);
    the main process writes the results to ``<train.output_dir>/eval_results.json`` (the latest evaluation).

    Returns:
        The evaluator's results (e.g. ``{"bbox": {"AP": ..., "AP50": ...}}``); ``{}`` without an evaluator or on
        non-main processes.
    """
    if "evaluator" not in cfg.dataloader or cfg.dataloader.evaluator is None:
        logger.info("No dataloader.evaluator in the config; skipping evaluation.")
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    results = dict(results or {})
    if comm.is_main_process() and results:
        print_csv_format(results)
        output_dir = _train_opt(cfg, "output_dir")
        if output_dir:
            with atomic_write(os.path.join(output_dir, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
    return results


def _build_hooks(cfg: Any, model: torch.nn.Module, checkpointer: DetectionCheckpointer) -> list[hooks.HookBase | None]:
    """Hooks in the order exact resume needs (state-changing hooks before the checkpointer, writers last)."""
    output_dir = cfg.train.output_dir
    eval_period = int(_train_opt(cfg, "eval_period", 0))
    ema = (
        hooks.EMAHook(model, decay=float(_train_opt(cfg, "ema.decay", 0.9998)))
        if _train_opt(cfg, "ema.enabled", False)
        else None
    )
    best_metric = _train_opt(cfg, "best_checkpointer.val_metric")
    stop_metric = _train_opt(cfg, "early_stopping.metric")
    ckpt_cfg = dict(_train_opt(cfg, "checkpointer", {}) or {})
    if "period" not in ckpt_cfg:
        raise ValueError("train.checkpointer.period is missing: set how many iterations lie between checkpoints.")
    main = comm.is_main_process()
    return [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        ema,
        hooks.EvalHook(eval_period, lambda: do_test(cfg, model), ema=ema),
        hooks.BestCheckpointer(
            eval_period, checkpointer, best_metric, mode=_train_opt(cfg, "best_checkpointer.mode", "max")
        )
        if best_metric and eval_period > 0 and main
        else None,
        hooks.EarlyStopping(
            eval_period,
            stop_metric,
            mode=_train_opt(cfg, "early_stopping.mode", "max"),
            patience=int(_train_opt(cfg, "early_stopping.patience", 3)),
            min_delta=float(_train_opt(cfg, "early_stopping.min_delta", 0.0)),
        )
        if stop_metric and eval_period > 0
        else None,
        hooks.PeriodicCheckpointer(checkpointer, int(ckpt_cfg["period"]), max_to_keep=ckpt_cfg.get("max_to_keep"))
        if main
        else None,
        hooks.PeriodicWriter(
            build_writers(output_dir, int(cfg.train.max_iter), int(_train_opt(cfg, "smoothing_window", 20))),
            period=int(_train_opt(cfg, "log_period", 20)),
        )
        if main
        else None,
    ]


def do_train(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Build model, optimizer, train loader and trainer from ``cfg``; train (resuming with ``args.resume``).

    Writes checkpoints and ``metrics.json`` to ``train.output_dir`` and ``model_final.pth`` at the end.

    Returns:
        The latest value of every scalar logged (losses, lr, evaluation metrics such as ``bbox/AP``).
    """
    device = resolve_device(_train_opt(cfg, "device", "auto"))
    model = instantiate(cfg.model)
    model.to(device)
    logger.info(f"Model:\n{model}")

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model(model, **dict(_train_opt(cfg, "ddp", {}) or {}))
    trainer_kwargs = {"clip_grad_norm": _train_opt(cfg, "clip_grad_norm")}
    if _train_opt(cfg, "amp.enabled", False):
        precision_name = str(_train_opt(cfg, "amp.precision", "float16"))
        if precision_name not in _PRECISIONS:
            raise ValueError(f"train.amp.precision={precision_name!r}: expected one of {sorted(_PRECISIONS)}.")
        trainer: SimpleTrainer = AMPTrainer(
            model, train_loader, optimizer, precision=_PRECISIONS[precision_name], **trainer_kwargs
        )
    else:
        trainer = SimpleTrainer(model, train_loader, optimizer, **trainer_kwargs)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, optimizer=optimizer)
    trainer.register_hooks(_build_hooks(cfg, model, checkpointer))

    resume = bool(getattr(args, "resume", False))
    extra = checkpointer.resume_or_load(_train_opt(cfg, "init_checkpoint", ""), resume=resume)
    if resume and checkpointer.has_checkpoint():
        if "trainer" not in extra or "iteration" not in extra:
            raise ValueError(
                f"--resume: the last checkpoint in {cfg.train.output_dir!r} has no trainer state "
                f"(keys: {sorted(extra)}); it was not written by this tool."
            )
        trainer.load_state_dict(extra["trainer"])
        start_iter = int(extra["iteration"]) + 1
    else:
        start_iter = 0
    max_iter = int(cfg.train.max_iter)
    if start_iter >= max_iter:
        logger.info(f"The checkpoint is at iteration {start_iter - 1}, train.max_iter={max_iter}: nothing to train.")
    else:
        # the PeriodicCheckpointer saves model_final.pth (with the trainer state) at the last iteration
        trainer.train(start_iter, max_iter)
    storage = trainer.storage
    return {k: v for k, (v, _) in storage.latest().items()} if storage is not None else {}


def setup(args: argparse.Namespace) -> Any:
    """Load ``args.config_file``, apply ``args.opts`` overrides and run :func:`default_setup`.

    Raises:
        FileNotFoundError: the config file does not exist (names it).
    """
    if not args.config_file:
        raise ValueError("lazyconfig_train_net: --config-file is required.")
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"lazyconfig_train_net: config file {args.config_file!r} does not exist.")
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(args.opts or []))
    missing = [k for k in ("model", "dataloader", "train") if k not in cfg]
    if missing:
        raise ValueError(f"Config {args.config_file!r} lacks the top-level keys {missing}.")
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or, with ``args.eval_only``, evaluate ``train.init_checkpoint``) as the config says.

    Returns:
        Evaluation results with ``--eval-only``; else the latest logged scalars of training (see :func:`do_train`).
    """
    cfg = setup(args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(resolve_device(_train_opt(cfg, "device", "auto")))
        model = create_ddp_model(model)
        DetectionCheckpointer(model).load(_train_opt(cfg, "init_checkpoint", ""))
        return do_test(cfg, model)
    return do_train(cfg, args)


def invoke_main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: parse ``argv`` and :func:`launch` :func:`main` on every process."""
    args = default_argument_parser().parse_args(argv)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
