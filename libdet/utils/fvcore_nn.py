"""fvcore's ``nn`` package (Caffe2-style weight fills, detection losses, precise BN), imported once for libdet.

Importing ``fvcore.nn`` scripts two loss functions with ``torch.jit.script``, which recent torch answers
with a ``FutureWarning`` per function on every import. The warning is about fvcore's code and cannot be
acted on by libdet users, so it is filtered here, for this import only.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    import fvcore.nn as fvcore_nn

c2_msra_fill = fvcore_nn.weight_init.c2_msra_fill
c2_xavier_fill = fvcore_nn.weight_init.c2_xavier_fill

__all__ = ["fvcore_nn", "c2_msra_fill", "c2_xavier_fill"]
