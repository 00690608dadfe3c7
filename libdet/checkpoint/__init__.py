"""Saving and loading model weights with optimizer and trainer state."""

from fvcore.common.checkpoint import Checkpointer, PeriodicCheckpointer

from .c2_model_loading import align_and_update_state_dicts
from .config_weights import load_config_weights
from .detection_checkpoint import DetectionCheckpointer
from .restricted_unpickler import ForbiddenGlobalError, restricted_load

__all__ = [
    "Checkpointer",
    "PeriodicCheckpointer",
    "DetectionCheckpointer",
    "ForbiddenGlobalError",
    "align_and_update_state_dicts",
    "load_config_weights",
    "restricted_load",
]
