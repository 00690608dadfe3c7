"""The training task of the executor: a libdet lazy config trained on YMIR's index files.

The executor config's hyper-parameters become lazy-config overrides (``batch_size`` ->
``dataloader.train.total_batch_size``, ``max_iter``, ``learning_rate`` -> ``optimizer.lr``, ``num_workers``,
``eval_period``, then ``args_options``), the class count is set from ``class_names``, and libdet's own trainer,
evaluator and checkpointer run it. After every evaluation, and at the end, a model stage (weights + the resolved
config) is written to ``output.models_dir`` and recorded in ``result.yaml``.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
from typing import Any

import torch
import yaml
from ymir_dataset import register_ymir_dataset
from ymir_protocol import Env, Monitor, ReturnCode, YmirError, stage_progress, write_model_stage

from libdet.config import LazyConfig
from libdet.engine import HookBase
from libdet.engine.training import do_train
from libdet.utils import comm
from libdet.utils.file_io import atomic_write

__all__ = ["ModelStageWriter", "build_training_config", "run_training"]

logger = logging.getLogger("libdet.ymir")

TRAIN_DATASET, VAL_DATASET = "ymir_train", "ymir_val"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config_path(name: str, executor_config_file: str) -> str:
    candidates = [name] if os.path.isabs(name) else [name, os.path.join(REPO_ROOT, name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise YmirError(
        ReturnCode.CONFIG, f"{executor_config_file}: config_file {name!r} is not a libdet lazy config file."
    )


def _weights_to_start_from(env: Env, config: dict[str, Any]) -> str:
    listed = config.get("pretrained_model_params") or []
    listed = [listed] if isinstance(listed, str) else listed
    paths = [p if os.path.isabs(p) else os.path.join(env.input.models_dir, p) for p in listed]
    weights = [p for p in paths if p.endswith((".pth", ".pkl", ".pt"))]
    if weights and not os.path.isfile(weights[0]):
        raise YmirError(ReturnCode.MODEL, f"pretrained_model_params names {weights[0]}, which does not exist.")
    return weights[0] if weights else ""


def _set_num_classes(cfg: Any, num_classes: int, source: str) -> None:
    """The class count of the R-CNN family (``model.roi_heads``) or of dense detectors (``model``)."""
    for node in (cfg.model.get("roi_heads"), cfg.model):
        if node is not None and "num_classes" in node:
            node.num_classes = num_classes
            return
    raise YmirError(ReturnCode.CONFIG, f"{source}: the model has no num_classes (model.roi_heads or model).")


def build_training_config(env: Env, config: dict[str, Any]) -> Any:
    """The lazy config of the training task (datasets registered, hyper-parameters applied)."""
    source = env.input.config_file
    cfg = LazyConfig.load(_config_path(str(config.get("config_file", "")), source))
    class_names = list(config["class_names"])
    work_dir = os.path.join(env.output.root_dir, "libdet-training")
    for name, index in ((TRAIN_DATASET, env.input.training_index_file), (VAL_DATASET, env.input.val_index_file)):
        register_ymir_dataset(name, index, class_names, os.path.join(work_dir, f"{name}_coco.json"))

    _set_num_classes(cfg, len(class_names), source)
    cfg.dataloader.train.dataset.names = TRAIN_DATASET
    cfg.dataloader.test.dataset.names = VAL_DATASET
    cfg.dataloader.test.dataset.filter_empty = False
    if "evaluator" in cfg.dataloader:
        cfg.dataloader.evaluator.dataset_name = VAL_DATASET
        cfg.dataloader.evaluator.output_dir = None
    overrides = []
    for key, target in (
        ("batch_size", "dataloader.train.total_batch_size"),
        ("max_iter", "train.max_iter"),
        ("learning_rate", "optimizer.lr"),
        ("num_workers", "dataloader.train.num_workers"),
        ("num_workers", "dataloader.test.num_workers"),
        ("eval_period", "train.eval_period"),
    ):
        if config.get(key) not in (None, ""):
            overrides.append(f"{target}={config[key]}")
    options = config.get("args_options") or []
    overrides += shlex.split(options) if isinstance(options, str) else [str(o) for o in options]
    try:
        cfg = LazyConfig.apply_overrides(cfg, overrides)
    except Exception as e:
        raise YmirError(ReturnCode.CONFIG, f"{source}: cannot apply {overrides}: {e}") from e

    gpu_ids = "" if config.get("gpu_id") is None else str(config["gpu_id"]).strip()
    if gpu_ids and not torch.cuda.is_available():
        raise YmirError(ReturnCode.NO_GPU, f"{source}: gpu_id is {gpu_ids!r} but no CUDA device is available.")
    cfg.train.device = f"cuda:{gpu_ids.split(',')[0]}" if gpu_ids else "cpu"
    cfg.train.output_dir = work_dir
    cfg.train.init_checkpoint = _weights_to_start_from(env, config)
    cfg.ymir = {"class_names": class_names}  # kept with the weights, so infer/mining can check the classes
    return cfg


def _stage_metrics(latest: dict[str, float]) -> dict[str, float]:
    """YMIR metrics (fractions) from libdet's evaluation scalars (COCO AP in percent)."""
    metrics = {"mAP": latest.get("bbox/AP", 0.0) / 100.0}
    if "segm/AP" in latest:
        metrics["maskAP"] = latest["segm/AP"] / 100.0
    return {k: (0.0 if not math.isfinite(v) else v) for k, v in metrics.items()}


class ModelStageWriter(HookBase):
    """After each evaluation (every ``eval_period`` iterations) and after the final one, save the weights to
    ``output.models_dir`` and record the stage (with ``config.yaml``, saved there before training); weights of stages dropped from ``result.yaml`` are
    removed. Must be registered after the evaluation hook, whose results it reads from the event storage."""

    def __init__(self, env: Env, monitor: Monitor, eval_period: int) -> None:
        self.env, self.monitor, self.eval_period = env, monitor, eval_period

    def _write(self, stage_name: str) -> None:
        if not comm.is_main_process():
            return
        models_dir = self.env.output.models_dir
        os.makedirs(models_dir, exist_ok=True)
        model = self.trainer.model
        model = getattr(model, "module", model)  # DistributedDataParallel
        weights = f"{stage_name}.pth"
        with atomic_write(os.path.join(models_dir, weights), "wb") as f:
            torch.save({"model": model.state_dict()}, f)
        latest = {k: v for k, (v, _) in self.trainer.storage.latest().items()}
        write_model_stage(self.env, stage_name, [weights, "config.yaml"], _stage_metrics(latest))
        self._remove_dropped_weights()

    def _remove_dropped_weights(self) -> None:
        with open(self.env.output.training_result_file) as f:
            result = yaml.safe_load(f) or {}
        kept = {name for stage in (result.get("model_stages") or {}).values() for name in stage["files"]}
        kept |= set(result.get("model") or [])
        for name in os.listdir(self.env.output.models_dir):
            if name.endswith(".pth") and name not in kept:
                os.remove(os.path.join(self.env.output.models_dir, name))

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        max_iter = self.trainer.max_iter
        if comm.is_main_process():
            self.monitor.progress("training", stage_progress("task", next_iter / max_iter))
        if self.eval_period > 0 and next_iter % self.eval_period == 0 and next_iter != max_iter:
            self._write(f"iter_{next_iter}")

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._write("last")


def run_training(env: Env, config: dict[str, Any], monitor: Monitor) -> None:
    """Train on ``training_index_file``, evaluate on ``val_index_file``, write model stages and TensorBoard."""
    cfg = build_training_config(env, config)
    # Saved before training: do_train puts the built model into cfg.optimizer.params, which YAML cannot hold.
    config_file = os.path.join(env.output.models_dir, "config.yaml")
    LazyConfig.save(cfg, config_file)
    if not os.path.isfile(config_file):
        raise YmirError(ReturnCode.CONFIG, f"The config of {config.get('config_file')!r} cannot be saved as YAML.")
    monitor.progress("training", stage_progress("preprocess", 1.0))
    stage_writer = ModelStageWriter(env, monitor, int(cfg.train.get("eval_period", 0) or 0))
    try:
        do_train(cfg, extra_hooks=[stage_writer], tensorboard_dir=env.output.tensorboard_dir)
    except FloatingPointError as e:
        raise YmirError(ReturnCode.NAN_LOSS, f"Training diverged: {e}") from e
    except FileNotFoundError as e:
        raise YmirError(ReturnCode.MODEL, f"Cannot load the starting weights: {e}") from e
    monitor.progress("training", 1.0)
