"""AnyNet / RegNet backbones ("Designing Network Design Spaces", https://arxiv.org/abs/2003.13678).

RegNetX uses :class:`ResBottleneckBlock` without squeeze-excitation, RegNetY with it (``se_ratio=0.25``).
Parameter names match detectron2's ``regnet.py`` (and pycls): ``stem.conv``, ``stem.bn``,
``s1.b1.proj``, ``s1.b1.bn``, ``s1.b1.f.a``, ``s1.b1.f.a_bn``, ``s1.b1.f.b``, ``s1.b1.f.se.f_ex.0``,
``s1.b1.f.c``, ``s1.b1.f.c_bn`` ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from libdet.layers import CNNBlockBase, get_norm
from libdet.layers.memory_format import to_backbone_memory_format

from .backbone import Backbone

__all__ = [
    "AnyNet",
    "BasicTransform",
    "BottleneckTransform",
    "RegNet",
    "ResBasicBlock",
    "ResBottleneckBlock",
    "ResStem",
    "SE",
    "SimpleStem",
    "VanillaBlock",
    "generate_regnet_parameters",
]

_Norm = str | Callable[[int], nn.Module] | None
_ActivationClass = Callable[[], nn.Module]


def _conv2d(w_in: int, w_out: int, k: int, *, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A k x k conv with "same" padding (k must be odd)."""
    if k % 2 != 1:
        raise ValueError(f"regnet: only odd kernel sizes are supported, got {k}.")
    return nn.Conv2d(w_in, w_out, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=bias)


def _init_weights(m: nn.Module) -> None:
    """pycls initialisation: He-normal (fan-out) convs, unit BN, N(0, 0.01) linear layers."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(mean=0.0, std=float(np.sqrt(2.0 / fan_out)))
    elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1.0)
        m.bias.data.zero_()
    elif isinstance(m, nn.Linear):
        m.weight.data.normal_(mean=0.0, std=0.01)
        m.bias.data.zero_()


def _norm(norm: _Norm, channels: int) -> nn.Module:
    layer = get_norm(norm, channels)
    return nn.Identity() if layer is None else layer


class ResStem(CNNBlockBase):
    """ResNet-style stem: 7x7 stride-2 conv, norm, activation, 3x3 stride-2 max pool (stride 4).

    Args:
        w_in: input channels.
        w_out: output channels.
        norm: normalisation (``get_norm`` name or callable).
        activation_class: callable returning a fresh activation module.
    """

    def __init__(self, w_in: int, w_out: int, norm: _Norm, activation_class: _ActivationClass):
        super().__init__(w_in, w_out, 4)
        self.conv = _conv2d(w_in, w_out, 7, stride=2)
        self.bn = _norm(norm, w_out)
        self.af = activation_class()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, w_in, H, W] -> Tensor[N, w_out, H / 4, W / 4]."""
        for layer in self.children():
            x = layer(x)
        return x


class SimpleStem(CNNBlockBase):
    """Simple stem: 3x3 stride-2 conv, norm, activation (stride 2).

    Args:
        w_in: input channels.
        w_out: output channels.
        norm: normalisation (``get_norm`` name or callable).
        activation_class: callable returning a fresh activation module.
    """

    def __init__(self, w_in: int, w_out: int, norm: _Norm, activation_class: _ActivationClass):
        super().__init__(w_in, w_out, 2)
        self.conv = _conv2d(w_in, w_out, 3, stride=2)
        self.bn = _norm(norm, w_out)
        self.af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, w_in, H, W] -> Tensor[N, w_out, H / 2, W / 2]."""
        for layer in self.children():
            x = layer(x)
        return x


class SE(nn.Module):
    """Squeeze-and-excitation: global average pool, 1x1 conv, activation, 1x1 conv, sigmoid gate.

    Args:
        w_in: channels of the input (and of the gate).
        w_se: channels of the squeezed representation.
        activation_class: callable returning a fresh activation module.
    """

    def __init__(self, w_in: int, w_se: int, activation_class: _ActivationClass):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.f_ex = nn.Sequential(
            _conv2d(w_in, w_se, 1, bias=True),
            activation_class(),
            _conv2d(w_se, w_in, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, w_in, H, W] -> the same shape, each channel scaled by its gate."""
        return x * self.f_ex(self.avg_pool(x))


class VanillaBlock(CNNBlockBase):
    """Plain block without residual: [3x3 conv, norm, activation] x 2.

    Args:
        w_in, w_out: input / output channels.
        stride: stride of the first conv.
        norm: normalisation (``get_norm`` name or callable).
        activation_class: callable returning a fresh activation module.
        params: unused (the block parameters of the AnyNet design space).
    """

    def __init__(
        self,
        w_in: int,
        w_out: int,
        stride: int,
        norm: _Norm,
        activation_class: _ActivationClass,
        params: dict[str, Any],
    ):
        super().__init__(w_in, w_out, stride)
        self.a = _conv2d(w_in, w_out, 3, stride=stride)
        self.a_bn = _norm(norm, w_out)
        self.a_af = activation_class()
        self.b = _conv2d(w_out, w_out, 3)
        self.b_bn = _norm(norm, w_out)
        self.b_af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, w_in, H, W] -> Tensor[N, w_out, H / stride, W / stride]."""
        for layer in self.children():
            x = layer(x)
        return x


class BasicTransform(nn.Module):
    """The residual function of :class:`ResBasicBlock`: 3x3 conv, norm, activation, 3x3 conv, norm."""

    def __init__(
        self,
        w_in: int,
        w_out: int,
        stride: int,
        norm: _Norm,
        activation_class: _ActivationClass,
        params: dict[str, Any],
    ):
        super().__init__()
        self.a = _conv2d(w_in, w_out, 3, stride=stride)
        self.a_bn = _norm(norm, w_out)
        self.a_af = activation_class()
        self.b = _conv2d(w_out, w_out, 3)
        self.b_bn = _norm(norm, w_out)
        self.b_bn.final_bn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


class _ResidualBlock(CNNBlockBase):
    """``act(proj(x) + f(x))``: the residual block shared by :class:`ResBasicBlock` and :class:`ResBottleneckBlock`,
    whose ``f`` is an instance of the subclass's ``transform_class``.

    The projection (1x1 conv ``proj`` + norm ``bn``) exists when the width or resolution changes.
    """

    transform_class: type

    def __init__(
        self,
        w_in: int,
        w_out: int,
        stride: int,
        norm: _Norm,
        activation_class: _ActivationClass,
        params: dict[str, Any],
    ):
        super().__init__(w_in, w_out, stride)
        self.proj, self.bn = None, None
        if w_in != w_out or stride != 1:
            self.proj = _conv2d(w_in, w_out, 1, stride=stride)
            self.bn = _norm(norm, w_out)
        self.f = self.transform_class(w_in, w_out, stride, norm, activation_class, params)
        self.af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, w_in, H, W] -> Tensor[N, w_out, H / stride, W / stride]."""
        x_p = self.bn(self.proj(x)) if self.proj is not None else x
        return self.af(x_p + self.f(x))


class ResBasicBlock(_ResidualBlock):
    """Residual basic block: ``act(proj(x) + f(x))`` with ``f`` a :class:`BasicTransform`.

    Args:
        w_in, w_out: input / output channels.
        stride: stride of the block.
        norm: normalisation (``get_norm`` name or callable).
        activation_class: callable returning a fresh activation module.
        params: unused block parameters.

    The projection (1x1 conv ``proj`` + norm ``bn``) exists when the width or resolution changes.
    """

    transform_class = BasicTransform


class BottleneckTransform(nn.Module):
    """The residual function of :class:`ResBottleneckBlock`: 1x1, grouped 3x3 (+ SE), 1x1.

    ``params``: ``bot_mul`` (bottleneck width = ``round(w_out * bot_mul)``), ``group_w`` (channels per
    group of the 3x3 conv) and ``se_r`` (SE width = ``round(w_in * se_r)``; 0 disables SE).
    """

    def __init__(
        self,
        w_in: int,
        w_out: int,
        stride: int,
        norm: _Norm,
        activation_class: _ActivationClass,
        params: dict[str, Any],
    ):
        super().__init__()
        w_b = int(round(w_out * params["bot_mul"]))
        w_se = int(round(w_in * params["se_r"]))
        if w_b % params["group_w"] != 0:
            raise ValueError(
                f"BottleneckTransform: bottleneck width {w_b} is not divisible by the group width {params['group_w']}."
            )
        groups = w_b // params["group_w"]
        self.a = _conv2d(w_in, w_b, 1)
        self.a_bn = _norm(norm, w_b)
        self.a_af = activation_class()
        self.b = _conv2d(w_b, w_b, 3, stride=stride, groups=groups)
        self.b_bn = _norm(norm, w_b)
        self.b_af = activation_class()
        self.se = SE(w_b, w_se, activation_class) if w_se else None
        self.c = _conv2d(w_b, w_out, 1)
        self.c_bn = _norm(norm, w_out)
        self.c_bn.final_bn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


class ResBottleneckBlock(_ResidualBlock):
    """Residual bottleneck block: ``act(proj(x) + f(x))`` with ``f`` a :class:`BottleneckTransform`.

    Args:
        w_in, w_out: input / output channels.
        stride: stride of the block.
        norm: normalisation (``get_norm`` name or callable).
        activation_class: callable returning a fresh activation module.
        params: ``{"bot_mul", "group_w", "se_r"}``, see :class:`BottleneckTransform`.
    """

    transform_class = BottleneckTransform


class AnyStage(nn.Module):
    """A stage of ``d`` blocks ``b1 ... b{d}`` of the same output width; only the first one strides."""

    def __init__(
        self,
        w_in: int,
        w_out: int,
        stride: int,
        d: int,
        block_class: type[CNNBlockBase],
        norm: _Norm,
        activation_class: _ActivationClass,
        params: dict[str, Any],
    ):
        super().__init__()
        for i in range(d):
            self.add_module(f"b{i + 1}", block_class(w_in, w_out, stride, norm, activation_class, params))
            stride, w_in = 1, w_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


def _default_activation_class() -> nn.Module:
    return nn.ReLU(inplace=True)


class AnyNet(Backbone):
    """A network of the AnyNet design space: a stem and stages ``s1, s2, ...`` of configurable blocks.

    Args:
        stem_class: stem class, called as ``stem_class(3, stem_width, norm, activation_class)``.
        stem_width: output channels of the stem.
        block_class: block class (e.g. :class:`ResBottleneckBlock`), called as
            ``block_class(w_in, w_out, stride, norm, activation_class, params)``.
        depths: number of blocks of each stage.
        widths: output width of each stage.
        group_widths: group width of each stage's 3x3 convs.
        strides: stride of each stage.
        bottleneck_ratios: bottleneck multiplier of each stage.
        se_ratio: squeeze-excitation ratio (0 disables SE).
        activation_class: callable returning a fresh activation module (default in-place ReLU).
        freeze_at: freeze the stem (>= 1) and stages ``s1 ... s{freeze_at - 1}``.
        norm: normalisation (``get_norm`` name or callable).
        out_features: outputs to return among ``"stem"``, ``"s1"``, ...; default: the last stage.
        channels_last: run in channels-last memory; None (default): on the CPU only, where oneDNN's
            convolutions are faster in it (see ``libdet.layers.memory_format``).
    """

    def __init__(
        self,
        *,
        stem_class: type[CNNBlockBase],
        stem_width: int,
        block_class: type[CNNBlockBase],
        depths: Sequence[int],
        widths: Sequence[int],
        group_widths: Sequence[int],
        strides: Sequence[int],
        bottleneck_ratios: Sequence[float],
        se_ratio: float,
        activation_class: _ActivationClass | None = None,
        freeze_at: int = 0,
        norm: _Norm = "BN",
        out_features: Sequence[str] | None = None,
        channels_last: bool | None = None,
    ):
        super().__init__()
        self.channels_last = channels_last
        lengths = {len(depths), len(widths), len(group_widths), len(strides), len(bottleneck_ratios)}
        if len(lengths) != 1:
            raise ValueError(
                "AnyNet: `depths`, `widths`, `group_widths`, `strides` and `bottleneck_ratios` must have the "
                f"same length, got {len(depths)}, {len(widths)}, {len(group_widths)}, {len(strides)}, "
                f"{len(bottleneck_ratios)}."
            )
        if activation_class is None:
            activation_class = _default_activation_class
        self.stem = stem_class(3, stem_width, norm, activation_class)

        current_stride = self.stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": self.stem.out_channels}
        self.stages_and_names: list[tuple[AnyStage, str]] = []
        prev_w = stem_width
        name = "stem"
        for i, (d, w, s, b, g) in enumerate(zip(depths, widths, strides, bottleneck_ratios, group_widths)):
            params = {"bot_mul": b, "group_w": g, "se_r": se_ratio}
            stage = AnyStage(prev_w, w, s, d, block_class, norm, activation_class, params)
            name = f"s{i + 1}"
            self.add_module(name, stage)
            self.stages_and_names.append((stage, name))
            for block in stage.children():
                current_stride = int(current_stride * block.stride)
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = list(stage.children())[-1].out_channels
            prev_w = w

        self.apply(_init_weights)

        if out_features is None:
            out_features = [name]
        out_features = list(out_features)
        if not out_features:
            raise ValueError("AnyNet: `out_features` must not be empty.")
        children = [x[0] for x in self.named_children()]
        for f in out_features:
            if f not in children:
                raise ValueError(
                    f"AnyNet: `out_features` entry {f!r} is not an available output; available: {children}."
                )
        self._out_features = out_features
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: Tensor[N, 3, H, W] images.

        Returns:
            dict of the requested outputs, ``name -> Tensor[N, C, H / stride, W / stride]``.
        """
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} takes an input of shape (N, C, H, W); got {tuple(x.shape)}.")
        outputs = {}
        x = self.stem(to_backbone_memory_format(x, self.channels_last))
        if "stem" in self._out_features:
            outputs["stem"] = x
        for stage, name in self.stages_and_names:
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> AnyNet:
        """Freeze the stem (``freeze_at >= 1``) and stages ``s1 ... s{freeze_at - 1}``: parameters stop
        requiring grad and BatchNorms become ``FrozenBatchNorm2d``.

        Returns:
            the network itself.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, (stage, _) in enumerate(self.stages_and_names, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self


def _adjust_block_compatibility(
    ws: list[float], bs: list[float], gs: list[int]
) -> tuple[list[int], list[float], list[int]]:
    """Round widths so that every bottleneck width is a multiple of its group width."""
    if not (len(ws) == len(bs) == len(gs)):
        raise ValueError("regnet: widths, bottleneck ratios and group widths must have the same length.")
    if not all(w > 0 and b > 0 and g > 0 for w, b, g in zip(ws, bs, gs)):
        raise ValueError("regnet: widths, bottleneck ratios and group widths must be positive.")
    vs = [int(max(1, w * b)) for w, b in zip(ws, bs)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs)]
    ms = [int(np.lcm(g, int(b))) if b > 1 else g for g, b in zip(gs, bs)]
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms)]
    ws = [int(v / b) for v, b in zip(vs, bs)]
    return ws, bs, gs


def generate_regnet_parameters(
    w_a: float, w_0: int, w_m: float, d: int, q: int = 8
) -> tuple[list[int], list[int], int, float, list[int], list[float]]:
    """Per-stage widths and depths of a RegNet from its linear-quantised width parameters.

    Block ``j`` has continuous width ``u_j = w_0 + w_a * j``; it is quantised to
    ``w_0 * w_m ** round(log(u_j / w_0) / log(w_m))`` rounded to a multiple of ``q``; consecutive
    blocks of equal width form a stage.

    Args:
        w_a: slope of the widths (>= 0).
        w_0: initial width (> 0, a multiple of ``q``).
        w_m: width multiplier between stages (> 1).
        d: total number of blocks.
        q: width quantum.

    Returns:
        (stage widths, stage depths, number of stages, total number of stages before merging,
        quantised width of every block, continuous width of every block).
    """
    if not (w_a >= 0 and w_0 > 0 and w_m > 1 and w_0 % q == 0):
        raise ValueError(
            f"generate_regnet_parameters: need w_a >= 0, w_0 > 0, w_m > 1 and w_0 % q == 0; got "
            f"w_a={w_a}, w_0={w_0}, w_m={w_m}, q={q}."
        )
    ws_cont = np.arange(d) * w_a + w_0
    ks = np.round(np.log(ws_cont / w_0) / np.log(w_m))
    ws_all = w_0 * np.power(w_m, ks)
    ws_all = np.round(np.divide(ws_all, q)).astype(int) * q
    ws, ds = np.unique(ws_all, return_counts=True)
    num_stages, total_stages = len(ws), ks.max() + 1
    ws, ds, ws_all, ws_cont = (x.tolist() for x in (ws, ds, ws_all, ws_cont))
    return ws, ds, num_stages, total_stages, ws_all, ws_cont


class RegNet(AnyNet):
    """A RegNet: an :class:`AnyNet` whose stage widths and depths follow a quantised linear rule.

    Args:
        stem_class: stem class (:class:`SimpleStem` in the RegNet papers, :class:`ResStem`).
        stem_width: output channels of the stem (32 in the papers).
        block_class: block class (:class:`ResBottleneckBlock`).
        depth: total number of blocks.
        w_a, w_0, w_m: width parameters, see :func:`generate_regnet_parameters`.
        group_width: channels per group of the 3x3 convs.
        stride: stride of every stage.
        bottleneck_ratio: bottleneck multiplier of every stage (1.0 for RegNetX/Y).
        se_ratio: squeeze-excitation ratio (0 for RegNetX, 0.25 for RegNetY).
        activation_class: callable returning a fresh activation module (default in-place ReLU).
        freeze_at, norm, out_features, channels_last: as for :class:`AnyNet` (stages are ``s1 ... s4``).

    Example (RegNetX-4GF as in detectron2's configs)::

        RegNet(stem_class=SimpleStem, stem_width=32, block_class=ResBottleneckBlock, depth=23,
               w_a=38.65, w_0=96, w_m=2.43, group_width=40, norm="FrozenBN", freeze_at=2,
               out_features=["s1", "s2", "s3", "s4"])
    """

    def __init__(
        self,
        *,
        stem_class: type[CNNBlockBase],
        stem_width: int,
        block_class: type[CNNBlockBase],
        depth: int,
        w_a: float,
        w_0: int,
        w_m: float,
        group_width: int,
        stride: int = 2,
        bottleneck_ratio: float = 1.0,
        se_ratio: float = 0.0,
        activation_class: _ActivationClass | None = None,
        freeze_at: int = 0,
        norm: _Norm = "BN",
        out_features: Sequence[str] | None = None,
        channels_last: bool | None = None,
    ):
        ws, ds = generate_regnet_parameters(w_a, w_0, w_m, depth)[0:2]
        ss = [stride for _ in ws]
        bs = [bottleneck_ratio for _ in ws]
        gs = [group_width for _ in ws]
        ws, bs, gs = _adjust_block_compatibility(ws, bs, gs)
        super().__init__(
            stem_class=stem_class,
            stem_width=stem_width,
            block_class=block_class,
            depths=ds,
            widths=ws,
            strides=ss,
            group_widths=gs,
            bottleneck_ratios=bs,
            se_ratio=se_ratio,
            activation_class=activation_class,
            freeze_at=freeze_at,
            norm=norm,
            out_features=out_features,
            channels_last=channels_last,
        )
