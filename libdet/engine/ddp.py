"""Data-parallel wrapping of a model (:func:`create_ddp_model`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from libdet.utils import comm

__all__ = ["create_ddp_model"]


def create_ddp_model(model: nn.Module, *, fp16_compression: bool = False, **kwargs: Any) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when there are several processes.

    Args:
        model: the model, already on this process's device.
        fp16_compression: all-reduce gradients in float16 (less communication).
        kwargs: passed to ``DistributedDataParallel`` (``device_ids`` defaults to this process's GPU).

    Returns:
        ``model`` itself with one process, else the DDP-wrapped model.
    """
    if comm.get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if "device_ids" not in kwargs and next(model.parameters(), torch.empty(0)).is_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp
