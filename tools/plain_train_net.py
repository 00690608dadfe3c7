#!/usr/bin/env python
"""Train or evaluate a detectron2-style YAML config with a plain, explicit training loop (detectron2's
``tools/plain_train_net.py``): no trainer class and no hooks, easy to copy and edit.

Usage::

    python tools/plain_train_net.py --config-file cfg.yaml --num-gpus 8 SOLVER.MAX_ITER 1000
    python tools/plain_train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS model_final.pth

The loop: every iteration takes a batch, sums the model's losses, steps the optimizer and the LR scheduler;
checkpoints every ``SOLVER.CHECKPOINT_PERIOD`` iterations (``--resume`` continues from the last one: model,
optimizer, scheduler and iteration), writes metrics every 20 iterations, and evaluates on ``DATASETS.TEST`` every
``TEST.EVAL_PERIOD`` iterations and at the end. Unlike ``tools/train_net.py`` the resume is not exact (the data
loader restarts with a new order).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import PeriodicCheckpointer

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import CfgNode, get_cfg, instantiate
from libdet.config.yaml_translate import evaluator_config
from libdet.data import build_detection_test_loader, build_detection_train_loader
from libdet.engine import create_ddp_model, default_argument_parser, default_setup, default_writers, launch
from libdet.evaluation import inference_on_dataset, print_csv_format
from libdet.modeling import build_model
from libdet.solver import build_lr_scheduler, build_optimizer
from libdet.utils import comm
from libdet.utils.events import EventStorage

logger = logging.getLogger("libdet.tools.plain_train_net")

__all__ = ["do_test", "do_train", "main", "setup"]


def do_test(cfg: CfgNode, model: torch.nn.Module) -> dict[str, Any]:
    """Evaluate ``model`` on every dataset of ``DATASETS.TEST`` that has an evaluator (by ``evaluator_type``).

    Returns:
        ``{dataset name: results}``, or the results alone for a single test dataset.
    """
    results: OrderedDict[str, Any] = OrderedDict()
    for name in cfg.DATASETS.TEST:
        node = evaluator_config(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", name))
        if node is None:
            logger.warning(f"No evaluator for {name!r} (its metadata has no evaluator_type); skipping it.")
            continue
        results[name] = inference_on_dataset(model, build_detection_test_loader(cfg, name), instantiate(node))
        if comm.is_main_process():
            logger.info(f"Evaluation results for {name} in csv format:")
            print_csv_format(results[name])
    if len(results) == 1:
        return next(iter(results.values()))
    return results


def do_train(cfg: CfgNode, model: torch.nn.Module, resume: bool = False) -> None:
    """The training loop (see the module docstring)."""
    model.train()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=scheduler)
    # MODEL.WEIGHTS initialises training (often ImageNet backbone weights): a partial fit is expected
    extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume, allow_partial=True)
    start_iter = extra.get("iteration", -1) + 1
    max_iter = cfg.SOLVER.MAX_ITER
    periodic_checkpointer = PeriodicCheckpointer(checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, max_iter=max_iter)
    writers = default_writers(cfg.OUTPUT_DIR, max_iter) if comm.is_main_process() else []

    data_loader = build_detection_train_loader(cfg)
    logger.info(f"Starting training from iteration {start_iter}")
    with EventStorage(start_iter) as storage:
        for data, iteration in zip(data_loader, range(start_iter, max_iter)):
            storage.iter = iteration
            loss_dict = model(data)
            losses = sum(loss_dict.values())
            if not torch.isfinite(losses).all():
                raise FloatingPointError(f"Loss became infinite or NaN at iteration {iteration}: {loss_dict}")
            reduced = {k: v.item() for k, v in comm.reduce_dict(loss_dict).items()}
            if comm.is_main_process():
                storage.put_scalars(total_loss=sum(reduced.values()), **reduced)

            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            storage.put_scalar("lr", optimizer.param_groups[0]["lr"], smoothing_hint=False)
            scheduler.step()

            if cfg.TEST.EVAL_PERIOD > 0 and (iteration + 1) % cfg.TEST.EVAL_PERIOD == 0 and iteration != max_iter - 1:
                do_test(cfg, model)
                model.train()  # evaluation switched it to eval mode
                comm.synchronize()
            if iteration - start_iter > 5 and ((iteration + 1) % 20 == 0 or iteration == max_iter - 1):
                for writer in writers:
                    writer.write()
            periodic_checkpointer.step(iteration)
    for writer in writers:
        writer.close()


def setup(args: argparse.Namespace) -> CfgNode:
    """Defaults merged with ``args.config_file`` and the ``KEY VALUE`` pairs of ``args.opts``, frozen; run set-up."""
    if not args.config_file:
        raise ValueError("plain_train_net: --config-file is required.")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> Any:
    """Evaluate (``--eval-only``) or train then evaluate; returns the evaluation results."""
    cfg = setup(args)
    model = build_model(cfg)
    logger.info(f"Model:\n{model}")
    if args.eval_only:
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return do_test(cfg, model)
    model = create_ddp_model(model, broadcast_buffers=False)
    do_train(cfg, model, resume=args.resume)
    return do_test(cfg, model)


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
