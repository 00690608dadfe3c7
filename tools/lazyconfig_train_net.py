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

The training and evaluation live in :mod:`libdet.engine.training` (``do_train``, ``do_test``); this script parses
the command line, sets the run up (:func:`setup`) and runs :func:`main` in every process through :func:`launch`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from libdet.config import LazyConfig
from libdet.engine import default_argument_parser, default_setup, launch, resolve_device
from libdet.engine.dataset_classes import set_num_classes_from_data
from libdet.engine.training import build_optimizer_step, build_writers, do_eval_only, do_test, do_train

__all__ = [
    "build_optimizer_step",
    "build_writers",
    "do_test",
    "do_train",
    "invoke_main",
    "main",
    "resolve_device",
    "setup",
]


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
    set_num_classes_from_data(cfg, overrides=list(args.opts or []))
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
        return do_eval_only(cfg)
    return do_train(cfg, resume=bool(args.resume))


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
