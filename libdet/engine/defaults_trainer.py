"""detectron2's ``DefaultTrainer``: a trainer for YAML configs with the standard hooks, overridable by classmethods.

Every piece comes from the translated lazy config or libdet's engine: the model, optimizer, LR schedule and data
loaders are built by the ``build_*(cfg)`` functions (which translate ``cfg`` with :mod:`libdet.config.yaml_translate`),
the iterations run in a :class:`SimpleTrainer` / :class:`AMPTrainer`, and the hooks are libdet's own. Resuming is
exact, as in ``tools/lazyconfig_train_net.py``: the checkpoint holds the trainer state (iteration, LR schedule,
data-loader position, RNG states).

Example::

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name):
            return COCOEvaluator(dataset_name, output_dir=cfg.OUTPUT_DIR)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from libdet.config import CfgNode
from libdet.utils import comm

from . import hooks
from .ddp import create_ddp_model
from .run_setup import default_writers
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = ["DefaultTrainer"]

logger = logging.getLogger(__name__)


class DefaultTrainer(TrainerBase):
    """Train the model of YAML config ``cfg`` on ``DATASETS.TRAIN`` and evaluate on ``DATASETS.TEST``.

    Builds (through the overridable classmethods) the model, optimizer, train loader and LR scheduler; wraps the
    model in DDP with several processes; registers the hooks of :meth:`build_hooks` (iteration timer, LR
    scheduler, precise BN when ``TEST.PRECISE_BN.ENABLED``, periodic checkpointer, evaluation every
    ``TEST.EVAL_PERIOD`` iterations and after training, metric writers).

    Args:
        cfg: the YAML config (``CfgNode``); it is rescaled by :meth:`auto_scale_workers` when
            ``SOLVER.REFERENCE_WORLD_SIZE`` is set.

    Attributes:
        cfg, model, optimizer, data_loader, scheduler, checkpointer, start_iter, max_iter.
    """

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__()
        from libdet.checkpoint import DetectionCheckpointer

        if not isinstance(cfg, CfgNode):
            raise TypeError(f"DefaultTrainer takes a YAML config (CfgNode from get_cfg()), got {type(cfg).__name__}.")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        # losses are read from the device (a synchronisation) every 20 iterations, when the writers need them
        if cfg.SOLVER.AMP.ENABLED:
            self._trainer: SimpleTrainer = AMPTrainer(model, data_loader, optimizer, gather_metric_period=20)
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer, gather_metric_period=20)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # the trainer state (iteration, LR schedule, loader position, RNG) is saved by the PeriodicCheckpointer hook
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._last_eval_results: Any = None
        self.register_hooks(self.build_hooks())

    @property
    def model(self) -> nn.Module:
        return self._trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._trainer.optimizer

    @property
    def data_loader(self) -> Any:
        return self._trainer.data_loader

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from the last checkpoint in ``OUTPUT_DIR`` when ``resume`` and there is one (model, optimizer,
        trainer state; training continues at the next iteration); otherwise load ``MODEL.WEIGHTS`` (model only)."""
        # MODEL.WEIGHTS initialises training (often ImageNet backbone weights): a partial fit is expected
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume, allow_partial=True)
        if resume and self.checkpointer.has_checkpoint():
            if "trainer" in extra:
                self.load_state_dict(extra["trainer"])
            self.start_iter = int(extra.get("iteration", self.iter)) + 1

    def train(self) -> Any:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``.

        Returns:
            The last evaluation's results when ``TEST.EXPECTED_RESULTS`` is set (after checking them), else ``None``.
        """
        super().train(self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            from libdet.evaluation import verify_results

            if self._last_eval_results is None:
                raise RuntimeError("TEST.EXPECTED_RESULTS is set but no evaluation ran.")
            if not verify_results(self.cfg.TEST.EXPECTED_RESULTS, self._last_eval_results):
                raise RuntimeError(f"Evaluation results do not match TEST.EXPECTED_RESULTS: {self._last_eval_results}")
            return self._last_eval_results
        return None

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.max_iter = self.max_iter
        self._trainer.storage = self.storage
        self._trainer.run_step()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        self._trainer.load_state_dict(state["_trainer"])

    def build_hooks(self) -> list[hooks.HookBase | None]:
        """The default hooks, in the order exact resuming needs (writers last)."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # precise BN: a short extra loader in this process

        def test_and_save_results() -> Any:
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        precise_bn = None
        if cfg.TEST.PRECISE_BN.ENABLED:
            precise_bn = hooks.PreciseBN(
                cfg.TEST.EVAL_PERIOD, self.model, self.build_train_loader(cfg), cfg.TEST.PRECISE_BN.NUM_ITER
            )
        main = comm.is_main_process()
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            precise_bn,
            hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD) if main else None,
            hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results),
            hooks.PeriodicWriter(self.build_writers(), period=20) if main else None,
        ]

    def build_writers(self) -> list:
        """Terminal printer, ``OUTPUT_DIR/metrics.json`` and TensorBoard."""
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        """The model of ``cfg`` (``libdet.modeling.build_model``)."""
        from libdet.modeling.meta_arch.build import build_model

        model = build_model(cfg)
        logger.info(f"Model:\n{model}")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """``libdet.solver.build_optimizer(cfg, model)``."""
        from libdet.solver import build_optimizer

        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer) -> Any:
        """``libdet.solver.build_lr_scheduler(cfg, optimizer)``."""
        from libdet.solver import build_lr_scheduler

        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        """``build_detection_train_loader(cfg)``; override for a custom mapper."""
        from libdet.data import build_detection_train_loader

        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Any:
        """``build_detection_test_loader(cfg, dataset_name)``; override for a custom mapper."""
        from libdet.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> Any:
        """The evaluator of ``dataset_name``. As in detectron2, there is no default: override it (or pass
        ``evaluators`` to :meth:`test`); ``tools/train_net.py`` has one choosing by the dataset's evaluator type."""
        raise NotImplementedError(
            f"{cls.__name__}.build_evaluator is not implemented: override it to evaluate on {dataset_name!r} "
            "(see tools/train_net.py), or pass evaluators to test()."
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, evaluators: Any = None) -> Any:
        """Evaluate ``model`` on each dataset of ``DATASETS.TEST``.

        Args:
            evaluators: one evaluator per test dataset; default :meth:`build_evaluator` of each (a dataset without
                one is skipped with a warning).

        Returns:
            ``{dataset name: results}``, or the results alone for a single test dataset.
        """
        from libdet.evaluation import inference_on_dataset, print_csv_format

        names = list(cfg.DATASETS.TEST)
        if evaluators is not None:
            evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
            if len(evaluators) != len(names):
                raise ValueError(f"test(): {len(evaluators)} evaluators for {len(names)} datasets in DATASETS.TEST.")
        results: OrderedDict[str, Any] = OrderedDict()
        for idx, name in enumerate(names):
            data_loader = cls.build_test_loader(cfg, name)
            if evaluators is not None:
                evaluator = evaluators[idx]
            else:
                try:
                    evaluator = cls.build_evaluator(cfg, name)
                except NotImplementedError:
                    logger.warning(f"No evaluator for {name!r}: implement build_evaluator or pass evaluators.")
                    results[name] = {}
                    continue
            results[name] = inference_on_dataset(model, data_loader, evaluator)
            if comm.is_main_process() and results[name]:
                logger.info(f"Evaluation results for {name} in csv format:")
                print_csv_format(results[name])
        if len(results) == 1:
            return next(iter(results.values()))
        return results

    @staticmethod
    def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
        """Rescale a config written for ``SOLVER.REFERENCE_WORLD_SIZE`` processes to ``num_workers``: batch size and
        lr scale linearly, iteration counts (max, steps, warmup, eval and checkpoint periods) inversely (detectron2's
        linear scaling rule). Returns ``cfg`` itself when no scaling applies, else a scaled copy."""
        old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
        if old_world_size == 0 or old_world_size == num_workers:
            return cfg
        cfg = cfg.clone()
        frozen = cfg.is_frozen()
        cfg.defrost()
        if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
            raise ValueError("SOLVER.IMS_PER_BATCH must be divisible by SOLVER.REFERENCE_WORLD_SIZE.")
        scale = num_workers / old_world_size
        bs = cfg.SOLVER.IMS_PER_BATCH = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
        lr = cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * scale
        max_iter = cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
        warmup = cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
        cfg.SOLVER.STEPS = tuple(int(round(s / scale)) for s in cfg.SOLVER.STEPS)
        cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
        cfg.SOLVER.CHECKPOINT_PERIOD = int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale))
        cfg.SOLVER.REFERENCE_WORLD_SIZE = num_workers
        logger.info(
            f"Auto-scaling the config to batch_size={bs}, learning_rate={lr}, max_iter={max_iter}, warmup={warmup}."
        )
        if frozen:
            cfg.freeze()
        return cfg
