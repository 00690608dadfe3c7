"""Normalisation layers: ``FrozenBatchNorm2d``, ``NaiveSyncBatchNorm``, ``CycleBatchNormList``,
channel-wise ``LayerNorm``, and ``get_norm`` which builds one of them from a short name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .wrappers import BatchNorm2d

__all__ = [
    "FrozenBatchNorm2d",
    "NaiveSyncBatchNorm",
    "CycleBatchNormList",
    "LayerNorm",
    "get_norm",
]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose batch statistics and affine parameters are fixed buffers.

    It computes ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` as a single
    per-channel affine transform (scale and shift are derived from the buffers on every call), so it
    never updates any statistic and has no trainable parameter. A ``libdet.layers.Conv2d`` whose ``norm`` it
    is folds it into the convolution's weights on each call instead of running it. Inputs of any floating dtype (e.g.
    float16 under autocast) are supported; the output has the input's dtype.

    Its state_dict holds ``weight``, ``bias``, ``running_mean`` and ``running_var`` (no
    ``num_batches_tracked``); a ``num_batches_tracked`` entry in a loaded state_dict is ignored, and
    checkpoints from before running statistics were stored load with mean 0 / variance 1.

    Args:
        num_features: number of channels C of an input of shape (N, C, H, W).
        eps: value added to the variance for numerical stability.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        # 1 - eps so that a freshly built layer is exactly the identity.
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel affine map the layer applies, ``y = x * scale + shift``: two ``Tensor[C]``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_and_shift()
        shape = [1, -1] + [1] * (x.dim() - 2)
        scale = scale.to(x.dtype).reshape(shape)
        shift = shift.to(x.dtype).reshape(shape)
        # One fused op: x * scale + shift.
        return torch.addcmul(shift, x, scale)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Checkpoints of a trainable BatchNorm2d carry a counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Old checkpoints (e.g. converted from Caffe2) have no running statistics.
            if prefix + "running_mean" not in state_dict:
                state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
            if prefix + "running_var" not in state_dict:
                state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a ``FrozenBatchNorm2d``.

        Children are replaced in place; statistics, affine parameters and ``eps`` are copied.

        Args:
            module: a module, possibly a batch norm itself.

        Returns:
            ``module`` with its batch norms replaced, or a new ``FrozenBatchNorm2d`` if ``module``
            itself is a batch norm.
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            ref = module.weight if module.weight is not None else module.running_mean
            res = cls(module.num_features, eps=module.eps)
            if ref is not None:
                res = res.to(device=ref.device, dtype=ref.dtype)
            with torch.no_grad():
                if module.affine:
                    res.weight.copy_(module.weight)
                    res.bias.copy_(module.bias)
                if module.running_mean is not None:
                    res.running_mean.copy_(module.running_mean)
                    res.running_var.copy_(module.running_var)
            return res
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module

    @classmethod
    def convert_frozenbatchnorm2d_to_batchnorm2d(cls, module: nn.Module) -> nn.Module:
        """Inverse of ``convert_frozen_batchnorm``: make every ``FrozenBatchNorm2d`` a trainable
        ``torch.nn.BatchNorm2d`` with the same statistics, affine parameters and ``eps``.

        Returns:
            ``module`` with its frozen batch norms replaced, or a new ``BatchNorm2d``.
        """
        if isinstance(module, FrozenBatchNorm2d):
            res = nn.BatchNorm2d(
                module.num_features, eps=module.eps, device=module.weight.device, dtype=module.weight.dtype
            )
            with torch.no_grad():
                res.weight.copy_(module.weight)
                res.bias.copy_(module.bias)
                res.running_mean.copy_(module.running_mean)
                res.running_var.copy_(module.running_var)
            return res
        for name, child in module.named_children():
            new_child = cls.convert_frozenbatchnorm2d_to_batchnorm2d(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


def _dist_world_size() -> int:
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size()


class _DifferentiableAllReduce(torch.autograd.Function):
    """Sum a tensor over all processes; the gradient is summed the same way."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = input.clone()
        dist.all_reduce(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _DifferentiableAllReduce.apply(x)


class NaiveSyncBatchNorm(BatchNorm2d):
    """``torch.nn.BatchNorm2d`` whose training statistics are averaged over all processes.

    A simple alternative to ``torch.nn.SyncBatchNorm`` that works with any ``torch.distributed``
    backend: each process computes per-channel mean and mean of squares, which are all-reduced
    (with gradient). Outside training, or when ``torch.distributed`` is not initialised or has a
    single process, it is exactly ``torch.nn.BatchNorm2d``. Running variance is updated with the
    (biased) batch variance used for normalisation.

    Args:
        *args, **kwargs: as for ``torch.nn.BatchNorm2d``.
        stats_mode: ``""``: every process gets equal weight in the average (all processes must
            have a non-empty batch); ``"N"``: each process is weighted by its batch size, so empty
            batches are allowed (a step where every process is empty leaves the running statistics
            unchanged).
    """

    def __init__(self, *args: Any, stats_mode: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if stats_mode not in ("", "N"):
            raise ValueError(f'NaiveSyncBatchNorm: `stats_mode` must be "" or "N", got {stats_mode!r}.')
        self._stats_mode = stats_mode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        world_size = _dist_world_size()
        if world_size == 1 or not self.training:
            return super().forward(input)

        B, C = input.shape[0], input.shape[1]
        in_dtype = input.dtype
        if in_dtype in (torch.float16, torch.bfloat16):
            input = input.float()  # statistics in float32
        mean = torch.mean(input, dim=[0, 2, 3])
        meansqr = torch.mean(input * input, dim=[0, 2, 3])

        if self._stats_mode == "":
            if B == 0:
                raise ValueError(
                    'NaiveSyncBatchNorm(stats_mode="") got an empty batch; use stats_mode="N" to '
                    "allow empty batches on some processes."
                )
            vec = _all_reduce_sum(torch.cat([mean, meansqr], dim=0)) * (1.0 / world_size)
            mean, meansqr = torch.split(vec, C)
            present = torch.ones([], device=mean.device, dtype=mean.dtype)
        else:
            if B == 0:
                vec = torch.zeros([2 * C + 1], device=mean.device, dtype=mean.dtype)
                vec = vec + input.sum()  # keeps the graph connected to the (empty) input
            else:
                vec = torch.cat([mean, meansqr, torch.ones([1], device=mean.device, dtype=mean.dtype)], dim=0)
            vec = _all_reduce_sum(vec * B)
            total_batch = vec[-1].detach()
            mean, meansqr, _ = torch.split(vec / total_batch.clamp(min=1), C)
            # 0 when every process had an empty batch: statistics are then left unchanged.
            present = total_batch.clamp(max=1)

        var = meansqr - mean * mean
        invstd = torch.rsqrt(var + self.eps)
        scale = invstd if self.weight is None else self.weight * invstd
        shift = -mean * scale if self.bias is None else self.bias - mean * scale

        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(present.long())
                if self.momentum is None:  # cumulative moving average
                    factor = present / self.num_batches_tracked.clamp(min=1).to(present.dtype)
                else:
                    factor = present * self.momentum
                self.running_mean += factor * (mean.detach() - self.running_mean)
                self.running_var += factor * (var.detach() - self.running_var)

        out = input * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        return out.to(in_dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", stats_mode={self._stats_mode!r}"


class CycleBatchNormList(nn.ModuleList):
    """A list of batch norms used in turn: call ``i`` uses ``self[i % length]``.

    Implements the "cycle batch norm" of "Benchmarking Detection Transfer Learning with Vision
    Transformers" (https://arxiv.org/abs/2111.11429): inputs from different domains (e.g. the levels
    of a feature pyramid passed through one shared head) keep separate statistics. When ``affine``,
    one weight/bias pair is shared by all of them.

    Args:
        length: number of batch norms.
        bn_class: the batch norm class to build, called as ``bn_class(**kwargs, affine=False)``.
        **kwargs: arguments of ``bn_class`` (e.g. ``num_features``), plus ``affine`` (default True).
    """

    def __init__(self, length: int, bn_class: Callable[..., nn.Module] = nn.BatchNorm2d, **kwargs: Any):
        self._affine = kwargs.pop("affine", True)
        super().__init__([bn_class(**kwargs, affine=False) for _ in range(length)])
        if self._affine:
            channels = self[0].num_features
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self._pos = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ret = self[self._pos](x)
        self._pos = (self._pos + 1) % len(self)
        if self._affine:
            return ret * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        return ret

    def extra_repr(self) -> str:
        return f"affine={self._affine}"


class LayerNorm(nn.Module):
    """LayerNorm over the channel dimension of an (N, C, H, W) input, with per-channel weight and bias.

    ``torch.nn.LayerNorm`` normalises trailing dimensions (channels-last); this normalises dim 1 at
    every spatial position, as used by ConvNeXt-style blocks and ViTDet's simple feature pyramid.

    Args:
        normalized_shape: number of channels C.
        eps: value added to the variance for numerical stability.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}"


def _group_norm_32(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


def _naive_sync_bn_n(channels: int) -> nn.Module:
    return NaiveSyncBatchNorm(channels, stats_mode="N")


_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm_32,
    "nnSyncBN": nn.SyncBatchNorm,
    "naiveSyncBN": NaiveSyncBatchNorm,
    # "naiveSyncBN_N" weights each process by its batch size, so empty batches are allowed.
    "naiveSyncBN_N": _naive_sync_bn_n,
    "LN": LayerNorm,
}


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """Build a normalisation layer for ``out_channels`` channels.

    Args:
        norm: ``None`` or ``""`` for no normalisation; one of ``"BN"``, ``"SyncBN"``, ``"FrozenBN"``,
            ``"GN"`` (32 groups), ``"nnSyncBN"``, ``"naiveSyncBN"``, ``"naiveSyncBN_N"``, ``"LN"``
            (channel-wise ``LayerNorm``); or a callable taking the channel count and returning a module.
        out_channels: number of channels of the normalised tensor.

    Returns:
        the module, or ``None`` when no normalisation is requested.

    Raises:
        ValueError: if ``norm`` is an unknown name.
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if len(norm) == 0:
            return None
        if norm not in _NORMS:
            raise ValueError(
                f'get_norm: unknown `norm` {norm!r}; expected one of {sorted(_NORMS)}, "" or None, '
                "or a callable that takes the number of channels and returns a module."
            )
        norm = _NORMS[norm]
    elif not callable(norm):
        raise TypeError(f"get_norm: `norm` must be a string, a callable or None, got {type(norm).__name__}.")
    return norm(out_channels)
