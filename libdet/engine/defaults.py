"""detectron2's ``detectron2.engine.defaults``: the common pieces of a training / evaluation script, re-exported
from the modules that hold them (one concept each):

* :mod:`libdet.engine.cli`: :func:`default_argument_parser`;
* :mod:`libdet.engine.run_setup`: :func:`default_setup`, :func:`default_writers`;
* :mod:`libdet.engine.predictor`: :class:`DefaultPredictor`; :mod:`libdet.engine.batch_predictor`:
  :class:`BatchPredictor`;
* :mod:`libdet.engine.ddp`: :func:`create_ddp_model`;
* :mod:`libdet.engine.device`: :func:`resolve_device`;
* :mod:`libdet.engine.defaults_trainer`: :class:`DefaultTrainer` (YAML configs).
"""

from .batch_predictor import BatchPredictor
from .cli import default_argument_parser
from .ddp import create_ddp_model
from .defaults_trainer import DefaultTrainer
from .device import resolve_device
from .predictor import DefaultPredictor
from .run_setup import default_setup, default_writers

__all__ = [
    "BatchPredictor",
    "DefaultPredictor",
    "DefaultTrainer",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "resolve_device",
]
