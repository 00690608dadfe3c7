"""Weight initialization of the DensePose heads and predictors."""

from torch import nn

__all__ = ["initialize_module_params"]


def initialize_module_params(module: nn.Module) -> None:
    """Biases to zero, weights with He (Kaiming) normal init, ``fan_out`` mode, for ReLU."""
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.constant_(param, 0)
        elif "weight" in name:
            nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")
