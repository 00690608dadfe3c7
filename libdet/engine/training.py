"""Training and evaluation from a lazy config, as ``tools/lazyconfig_train_net.py`` runs them: :func:`do_train`
builds the model, optimizer, data loader, the trainer's step (:func:`build_optimizer_step`) and hooks
(:func:`build_hooks`) from ``cfg`` and trains; :func:`do_test` evaluates; :func:`do_eval_only` evaluates
``train.init_checkpoint``.

The config has the top-level keys ``model``, ``dataloader`` (``train``, ``test``, ``evaluator``), ``optimizer``
(its ``params.model`` is filled with the built model), ``lr_multiplier`` (a fvcore ``ParamScheduler``) and
``train`` (see ``configs/common/train.py``). These functions run in every process of a job: start them with
:func:`libdet.engine.launch`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from libdet import model_zoo
from libdet.checkpoint import DetectionCheckpointer
from libdet.config import instantiate
from libdet.evaluation import inference_on_dataset, print_csv_format
from libdet.utils import comm
from libdet.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from libdet.utils.file_io import atomic_write
from libdet.utils.tracking_writers import build_tracking_writer

from . import hooks
from .ddp import create_ddp_model
from .device import resolve_device
from .optimizer_step import FullPrecision, MixedPrecision, OptimizerStep
from .train_loop import SimpleTrainer

__all__ = [
    "build_hooks",
    "build_optimizer_step",
    "build_writers",
    "do_eval_only",
    "do_test",
    "do_train",
    "resolve_init_checkpoint",
]

logger = logging.getLogger(__name__)

_PRECISIONS = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _train_opt(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.train.<key>`` (dotted), or ``default`` when the config does not set it."""
    node = cfg.train
    for part in key.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def build_writers(
    output_dir: str,
    max_iter: int,
    window_size: int = 20,
    tensorboard_dir: str | None = None,
    tracking: Sequence[Any] = (),
) -> list[Any]:
    """Terminal printer, ``<output_dir>/metrics.json``, TensorBoard (when ``tensorboard`` is installed) and the
    experiment trackers in ``tracking``.

    Args:
        output_dir: where ``metrics.json`` and the event files go.
        max_iter: total iterations (for the ETA).
        window_size: iterations in the median that smooths losses (1: raw per-iteration values).
        tensorboard_dir: where the TensorBoard events go (default: ``output_dir``).
        tracking: ``train.writers`` entries: ``"wandb"``, ``"mlflow"`` or built writers (see
            :func:`libdet.utils.tracking_writers.build_tracking_writer`). A tracker whose package is missing is
            an error naming the extra to install.
    """
    os.makedirs(output_dir, exist_ok=True)
    writers: list[Any] = [
        CommonMetricPrinter(max_iter, window_size=window_size),
        JSONWriter(os.path.join(output_dir, "metrics.json"), window_size=window_size),
    ]
    try:
        writers.append(TensorboardXWriter(tensorboard_dir or output_dir, window_size=window_size))
    except ImportError as e:
        logger.warning(f"Not writing TensorBoard events: {e}")
    writers.extend(build_tracking_writer(t, output_dir=output_dir, window_size=window_size) for t in tracking)
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


def build_hooks(
    cfg: Any,
    model: torch.nn.Module,
    checkpointer: DetectionCheckpointer,
    *,
    extra_hooks: Sequence[hooks.HookBase] = (),
    tensorboard_dir: str | None = None,
) -> list[hooks.HookBase | None]:
    """The training hooks ``cfg.train`` asks for, in the order exact resume needs: state-changing hooks before the
    checkpointer, writers last. ``extra_hooks`` run after the evaluation hooks (they can read the latest
    evaluation from the event storage) and before the checkpointer."""
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
        *extra_hooks,
        hooks.PeriodicCheckpointer(checkpointer, int(ckpt_cfg["period"]), max_to_keep=ckpt_cfg.get("max_to_keep"))
        if main
        else None,
        hooks.PeriodicWriter(
            build_writers(
                output_dir,
                int(cfg.train.max_iter),
                int(_train_opt(cfg, "smoothing_window", 20)),
                tensorboard_dir=tensorboard_dir,
                tracking=instantiate(_train_opt(cfg, "writers", [])) or [],
            ),
            period=int(_train_opt(cfg, "log_period", 20)),
        )
        if main
        else None,
    ]


def build_optimizer_step(cfg: Any, device: torch.device) -> OptimizerStep:
    """The trainer's step from ``train.amp``, ``train.grad_transforms`` and ``train.grad_accumulation_steps``.

    Raises:
        ValueError: for an unknown ``train.amp.precision``, or the retired ``train.clip_grad_norm``.
    """
    if _train_opt(cfg, "clip_grad_norm") is not None:
        raise ValueError(
            "train.clip_grad_norm is no longer read: use train.grad_transforms=[L(ClipGradNorm)(max_norm=...)] "
            "(from libdet.engine import ClipGradNorm)."
        )
    precision = FullPrecision()
    if _train_opt(cfg, "amp.enabled", False):
        precision_name = str(_train_opt(cfg, "amp.precision", "float16"))
        if precision_name not in _PRECISIONS:
            raise ValueError(f"train.amp.precision={precision_name!r}: expected one of {sorted(_PRECISIONS)}.")
        precision = MixedPrecision(_PRECISIONS[precision_name], device_type=device.type)
    transforms = instantiate(_train_opt(cfg, "grad_transforms", [])) or []
    return OptimizerStep(
        precision=precision,
        grad_transforms=list(transforms),
        accumulation_steps=int(_train_opt(cfg, "grad_accumulation_steps", 1)),
    )


def resolve_init_checkpoint(name: str) -> str:
    """``train.init_checkpoint`` as a loadable path: a file, a URI (``https://``, ``detectron2://``), or a model-zoo
    config name (``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml``, ``COCO/mask_rcnn_r50.py``), which
    stands for its published weights."""
    if not name or "://" in name or os.path.exists(name) or not name.endswith((".yaml", ".py")):
        return name
    try:
        url = model_zoo.get_checkpoint_url(name)
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as e:
        raise FileNotFoundError(
            f"train.init_checkpoint={name!r} is neither a file nor a model-zoo config with published weights: {e}"
        ) from e
    logger.info(f"train.init_checkpoint={name!r}: the model zoo's weights {url}")
    return url


def do_train(
    cfg: Any,
    *,
    resume: bool = False,
    extra_hooks: Sequence[hooks.HookBase] = (),
    tensorboard_dir: str | None = None,
) -> dict[str, Any]:
    """Build model, optimizer, train loader and trainer from ``cfg`` and train.

    Writes checkpoints and ``metrics.json`` to ``train.output_dir`` and ``model_final.pth`` at the end.

    Args:
        cfg: the lazy config (``model``, ``dataloader.train``, ``optimizer``, ``lr_multiplier``, ``train``).
        resume: continue from the last checkpoint in ``train.output_dir`` when there is one (exactly: see
            :mod:`libdet.engine.train_loop`); otherwise start from ``train.init_checkpoint``.
        extra_hooks: more hooks (see :func:`build_hooks` for their place).
        tensorboard_dir: where the TensorBoard events go (default: ``train.output_dir``).

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
    trainer = SimpleTrainer(
        model,
        train_loader,
        optimizer,
        step=build_optimizer_step(cfg, device),
        # losses are read from the device (a synchronisation) only when the writers need them
        gather_metric_period=int(_train_opt(cfg, "log_period", 20)),
    )
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, optimizer=optimizer)
    trainer.register_hooks(
        build_hooks(cfg, model, checkpointer, extra_hooks=extra_hooks, tensorboard_dir=tensorboard_dir)
    )

    # train.init_checkpoint initialises training: often partial (ImageNet backbone, or a detector fine-tuned with
    # new heads); resuming still requires the last checkpoint to fit the whole model
    # with a different class count (fine-tuning), the predictor layers' weights do not fit and keep their fresh
    # initialisation; the checkpointer logs each skipped key with both shapes
    init_checkpoint = resolve_init_checkpoint(_train_opt(cfg, "init_checkpoint", ""))
    extra = checkpointer.resume_or_load(init_checkpoint, resume=resume, allow_partial=True)
    if resume and checkpointer.has_checkpoint():
        if "trainer" not in extra or "iteration" not in extra:
            raise ValueError(
                f"resume: the last checkpoint in {cfg.train.output_dir!r} has no trainer state "
                f"(keys: {sorted(extra)}); it was not written by do_train."
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


def do_eval_only(cfg: Any) -> dict[str, Any]:
    """Build ``cfg.model``, load ``train.init_checkpoint`` and evaluate it (:func:`do_test`)."""
    model = instantiate(cfg.model)
    model.to(resolve_device(_train_opt(cfg, "device", "auto")))
    model = create_ddp_model(model)
    DetectionCheckpointer(model).load(resolve_init_checkpoint(_train_opt(cfg, "init_checkpoint", "")))
    return do_test(cfg, model)
