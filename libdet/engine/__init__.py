"""Training engine (``detectron2.engine`` compatible): the training loop, its step seam, hooks, launcher and the
pieces of a training script.

``libdet.engine.hooks`` holds the hooks; the trainers are :class:`SimpleTrainer` / :class:`AMPTrainer`, and what an
iteration does to the weights is an :class:`OptimizerStep` (see :mod:`libdet.engine.optimizer_step`).
"""

from . import hooks, train_loop
from .batch_predictor import BatchPredictionError, BatchPredictor, PredictionResult
from .cli import default_argument_parser
from .ddp import create_ddp_model
from .defaults_trainer import DefaultTrainer
from .device import resolve_device
from .launch import DEFAULT_TIMEOUT, launch
from .optimizer_step import (
    ClipGradNorm,
    ClipGradNormPerGroup,
    FullPrecision,
    MixedPrecision,
    OptimizerStep,
)
from .predictor import DefaultPredictor
from .run_setup import default_setup, default_writers
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "BatchPredictionError",
    "BatchPredictor",
    "ClipGradNorm",
    "ClipGradNormPerGroup",
    "DEFAULT_TIMEOUT",
    "DefaultPredictor",
    "DefaultTrainer",
    "FullPrecision",
    "HookBase",
    "MixedPrecision",
    "OptimizerStep",
    "PredictionResult",
    "SimpleTrainer",
    "TrainerBase",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "hooks",
    "launch",
    "resolve_device",
    "train_loop",
]
