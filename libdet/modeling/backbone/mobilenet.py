"""MobileNetV3 backbones ("Searching for MobileNetV3", https://arxiv.org/abs/1905.02244) for CPU-friendly detectors.

The network is torchvision's implementation (``torchvision.models.mobilenet_v3_large`` / ``_small``): its
``features`` sequence is kept as it is, so the parameter names (``features.0.0.weight``, ``features.4.block.2.fc1
.weight``, ...) equal torchvision's, and a torchvision ImageNet checkpoint loads by name (``weights=``). The
classifier is dropped.

Outputs are named after the stride they reach, as :class:`~libdet.modeling.backbone.RegNet` names its stages:
``"stem"`` (stride 2), ``"s1"`` (4), ``"s2"`` (8), ``"s3"`` (16), ``"s4"`` (32). Each is the output of the last
block at that stride (for ``"s4"``, the final 1x1 expansion conv: 960 channels for large, 576 for small), so an
:class:`~libdet.modeling.backbone.FPN` can sit on ``["s2", "s3", "s4"]`` (P3-P5) or ``["s1", ..., "s4"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from libdet.layers import FrozenBatchNorm2d, get_norm
from libdet.layers.memory_format import to_backbone_memory_format

from .backbone import Backbone

__all__ = ["MobileNetV3"]

_ARCHS = ("large", "small")
# Names of the stages by output stride.
_STAGE_NAMES = {2: "stem", 4: "s1", 8: "s2", 16: "s3", 32: "s4"}
# torchvision trains MobileNetV3 with BatchNorm eps=0.001; its ImageNet statistics assume it.
_BN_EPS = 0.001


def _norm_layer(norm: str | Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    """A ``norm_layer`` for torchvision: ``get_norm(norm, channels)`` with torchvision's BatchNorm eps.

    ``"FrozenBN"`` builds a plain BatchNorm; the backbone converts it after loading weights (a torchvision
    checkpoint holds ``num_batches_tracked`` buffers, which FrozenBN lacks).
    """
    if norm is None or norm == "":
        raise ValueError("MobileNetV3: `norm` must name a normalisation; MobileNetV3 is not defined without one.")
    build_name = "BN" if norm == "FrozenBN" else norm

    def build(channels: int) -> nn.Module:
        layer = get_norm(build_name, channels)
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eps = _BN_EPS
        return layer

    return build


def _block_stride(block: nn.Module) -> int:
    """Stride of a torchvision block: the product of the strides of its convolutions (one of them strides)."""
    stride = 1
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            stride *= m.stride[0]
    return stride


def _block_out_channels(block: nn.Module) -> int:
    """Output channels of a torchvision block: those of its last convolution (the projection)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _load_torchvision_state_dict(weights: str, arch: str) -> dict[str, torch.Tensor]:
    """The state dict named by ``weights``: a file (a torchvision state dict, or a dict holding one under
    ``"model"``/``"state_dict"``), or a torchvision weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"`` or
    ``"MobileNet_V3_Large_Weights.IMAGENET1K_V1"``), downloaded by torchvision into the torch hub cache."""
    if os.path.isfile(weights):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for key in ("model", "state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise ValueError(f"MobileNetV3: weights file {weights!r} holds a {type(state).__name__}, not a state dict.")
        return state
    from torchvision.models import get_weight

    name = weights if "." in weights else f"MobileNet_V3_{arch.capitalize()}_Weights.{weights}"
    try:
        enum_value = get_weight(name)
    except (ValueError, KeyError, AttributeError) as e:
        raise ValueError(
            f"MobileNetV3: `weights`={weights!r} is neither a file nor a torchvision weights name "
            f"(e.g. 'IMAGENET1K_V1' or 'MobileNet_V3_{arch.capitalize()}_Weights.IMAGENET1K_V1'): {e}"
        ) from e
    return enum_value.get_state_dict(progress=False)


class MobileNetV3(Backbone):
    """torchvision's MobileNetV3 feature extractor as a libdet backbone.

    Args:
        arch: ``"large"`` or ``"small"``.
        width_mult: channel multiplier of every layer (torchvision's ``width_mult``; weights exist for 1.0).
        reduced_tail: halve the channels of the stride-32 blocks (torchvision's ``reduced_tail``, used by its
            detection models to save compute).
        norm: normalisation: ``"BN"`` (trainable), ``"FrozenBN"`` (fixed statistics and affine, for fine-tuning
            from ImageNet weights with small batches), ``"SyncBN"``, ``"GN"`` ... (any ``get_norm`` name or a
            callable taking the channel count). BatchNorms use torchvision's ``eps=0.001``.
        out_features: outputs to return, among ``"stem"``, ``"s1"`` ... ``"s4"``; default ``["s4"]``.
        freeze_at: freeze the stem (``>= 1``) and stages ``s1 ... s{freeze_at - 1}``: their parameters stop
            requiring grad and their BatchNorms become ``FrozenBatchNorm2d``.
        weights: ``None`` (random initialisation, torchvision's), a path to a torchvision MobileNetV3 state dict,
            or a torchvision weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"``), which torchvision downloads
            once into the torch hub cache. The classifier's weights are ignored.
        channels_last: run in channels-last memory; None (default): on the CPU only, where oneDNN's
            convolutions are faster in it (see ``libdet.layers.memory_format``).
    """

    def __init__(
        self,
        *,
        arch: str = "large",
        width_mult: float = 1.0,
        reduced_tail: bool = False,
        norm: str | Callable[[int], nn.Module] = "BN",
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
        weights: str | None = None,
        channels_last: bool | None = None,
    ):
        super().__init__()
        self.channels_last = channels_last
        if arch not in _ARCHS:
            raise ValueError(f"MobileNetV3: `arch` must be one of {_ARCHS}, got {arch!r}.")
        from torchvision import models

        build = models.mobilenet_v3_large if arch == "large" else models.mobilenet_v3_small
        network = build(width_mult=width_mult, reduced_tail=reduced_tail, norm_layer=_norm_layer(norm))
        self.features: nn.Sequential = network.features  # keeps torchvision's parameter names
        del network  # the classifier

        # Group the blocks into stages by the stride they reach.
        self._stage_end: dict[str, int] = {}  # stage name -> index of its last block in `features`
        self._out_feature_strides: dict[str, int] = {}
        self._out_feature_channels: dict[str, int] = {}
        stride = 1
        for index, block in enumerate(self.features):
            stride *= _block_stride(block)
            if stride not in _STAGE_NAMES:
                raise ValueError(f"MobileNetV3: block features.{index} reaches an unexpected stride {stride}.")
            name = _STAGE_NAMES[stride]
            self._stage_end[name] = index
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = _block_out_channels(block)

        out_features = list(out_features) if out_features is not None else [name]
        if not out_features:
            raise ValueError("MobileNetV3: `out_features` must not be empty.")
        unknown = [f for f in out_features if f not in self._stage_end]
        if unknown:
            raise ValueError(
                f"MobileNetV3: `out_features` {unknown} are not outputs; available: {list(self._stage_end)}."
            )
        self._out_features = out_features
        # Blocks after the last requested output are never run.
        self._last_block = max(self._stage_end[f] for f in out_features)

        if weights:
            self._load_weights(weights, arch)
        if norm == "FrozenBN":
            FrozenBatchNorm2d.convert_frozen_batchnorm(self.features)
        self.freeze(freeze_at)

    def _load_weights(self, weights: str, arch: str) -> None:
        state = _load_torchvision_state_dict(weights, arch)
        features = {k: v for k, v in state.items() if k.startswith("features.")}
        if not features:
            raise ValueError(
                f"MobileNetV3: `weights`={weights!r} has no 'features.*' entries (keys start with "
                f"{sorted({k.split('.')[0] for k in state})}); expected a torchvision MobileNetV3 state dict."
            )
        own = self.state_dict()
        wrong_shape = [
            f"{k}: {tuple(v.shape)} in weights, {tuple(own[k].shape)} here"
            for k, v in features.items()
            if k in own and own[k].shape != v.shape
        ]
        if wrong_shape:
            raise ValueError(
                f"MobileNetV3: `weights`={weights!r} does not fit MobileNetV3-{arch} with these arguments "
                f"(width_mult / reduced_tail?): {wrong_shape[:3]}"
            )
        missing, unexpected = self.load_state_dict(features, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"MobileNetV3: `weights`={weights!r} does not match MobileNetV3-{arch}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: Tensor[N, 3, H, W] images.

        Returns:
            dict of the requested outputs, ``name -> Tensor[N, C, ceil(H / stride), ceil(W / stride)]``.
        """
        if x.dim() != 4:
            raise ValueError(f"MobileNetV3 takes an input of shape (N, C, H, W); got {tuple(x.shape)}.")
        x = to_backbone_memory_format(x, self.channels_last)
        outputs = {}
        wanted = {self._stage_end[f]: f for f in self._out_features}
        for index, block in enumerate(self.features):
            if index > self._last_block:
                break
            x = block(x)
            if index in wanted:
                outputs[wanted[index]] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> MobileNetV3:
        """Freeze the stem (``freeze_at >= 1``) and stages ``s1 ... s{freeze_at - 1}``: parameters stop requiring
        grad and BatchNorms become ``FrozenBatchNorm2d``.

        Returns:
            the backbone itself.
        """
        if freeze_at <= 0:
            return self
        frozen_stages = list(_STAGE_NAMES.values())[:freeze_at]
        last = max(self._stage_end[s] for s in frozen_stages if s in self._stage_end)
        for index in range(last + 1):
            block = self.features[index]
            for p in block.parameters():
                p.requires_grad = False
            self.features[index] = FrozenBatchNorm2d.convert_frozen_batchnorm(block)
        return self
