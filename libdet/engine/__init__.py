"""Training engine (``detectron2.engine`` compatible): the training loop, hooks, launcher and defaults.

``libdet.engine.hooks`` holds the hooks; the trainers are :class:`SimpleTrainer` / :class:`AMPTrainer`.
"""

from . import hooks, train_loop
from .defaults import (
    BatchPredictor,
    DefaultPredictor,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
    resolve_device,
)
from .launch import DEFAULT_TIMEOUT, launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "BatchPredictor",
    "DEFAULT_TIMEOUT",
    "DefaultPredictor",
    "HookBase",
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
