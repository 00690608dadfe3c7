"""Optimizers (detectron2's ``configs/common/optim.py``).

``params.model`` is filled with the built model by the training script before the optimizer is instantiated.
Parameters of normalization layers get no weight decay.
"""

import torch

from libdet.config import LazyCall as L
from libdet.solver import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
