"""ResNet / ResNeXt backbones (https://arxiv.org/abs/1512.03385, https://arxiv.org/abs/1611.05431),
with optional dilation (DC5) and deformable convolutions, in detectron2's layout.

Parameter names match detectron2 checkpoints: ``stem.conv1``, ``res2.0.shortcut``, ``res2.0.conv1``,
``res2.0.conv1.norm`` ... ``res5.2.conv3``; deformable blocks add ``conv2_offset``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import CNNBlockBase, Conv2d, DeformConv, ModulatedDeformConv, ShapeSpec, get_norm
from libdet.layers.memory_format import to_backbone_memory_format
from libdet.utils.fvcore_nn import c2_msra_fill

from .backbone import Backbone

__all__ = [
    "ResNetBlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "BasicStem",
    "ResNet",
    "make_stage",
]

_Norm = str | Callable[[int], nn.Module] | None

# Kept for detectron2 compatibility: the base class of ResNet blocks.
ResNetBlockBase = CNNBlockBase


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: _Norm) -> Conv2d | None:
    """1x1 projection used when the channel count changes (detectron2 keeps the identity otherwise)."""
    if in_channels == out_channels:
        return None
    return Conv2d(
        in_channels, out_channels, kernel_size=1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
    )


class BasicBlock(CNNBlockBase):
    """The basic residual block of ResNet-18 and ResNet-34: two 3x3 convs and a shortcut.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        stride: stride of the first 3x3 conv (and of the projection shortcut).
        norm: normalisation after each conv (``get_norm`` name or callable).

    The shortcut is a 1x1 conv + norm when ``in_channels != out_channels``, otherwise the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: _Norm = "BN"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.shortcut, self.conv1, self.conv2):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H / stride, W / stride]."""
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return F.relu_(out)


class BottleneckBlock(CNNBlockBase):
    """The bottleneck residual block of ResNet-50 and deeper: 1x1, 3x3 (grouped, dilated) and 1x1 convs.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        bottleneck_channels: channels of the inner 3x3 conv.
        stride: stride of the block.
        num_groups: groups of the 3x3 conv (ResNeXt cardinality).
        norm: normalisation after each conv (``get_norm`` name or callable).
        stride_in_1x1: put the stride in the first 1x1 conv (MSRA / Caffe2 ResNets, used by
            detectron2's ImageNet-pretrained R-50/R-101) instead of the 3x3 conv (torchvision style).
        dilation: dilation of the 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: _Norm = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        if bottleneck_channels % num_groups != 0:
            raise ValueError(
                f"BottleneckBlock: `bottleneck_channels` ({bottleneck_channels}) must be divisible by "
                f"`num_groups` ({num_groups})."
            )
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H / stride, W / stride]."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return F.relu_(out)


class DeformBottleneckBlock(CNNBlockBase):
    """A bottleneck block whose 3x3 conv is deformable (v1) or modulated deformable (v2).

    Args:
        in_channels, out_channels, bottleneck_channels, stride, num_groups, norm, stride_in_1x1,
            dilation: as for :class:`BottleneckBlock`.
        deform_modulated: use modulated deformable conv (DCNv2, offsets + mask) instead of DCNv1.
        deform_num_groups: number of deformable groups (sets of offsets).

    The offsets (and mask) are predicted by ``conv2_offset``, a 3x3 conv initialised to zero, so a
    fresh block computes the same as a :class:`BottleneckBlock` (with mask 0.5 for DCNv2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: _Norm = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        # (dy, dx) per kernel position, plus a mask value per position for DCNv2.
        offset_channels_per_group = 27 if deform_modulated else 18
        deform_conv_op = ModulatedDeformConv if deform_modulated else DeformConv
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            offset_channels_per_group * deform_num_groups,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = deform_conv_op(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if layer is not None:
                c2_msra_fill(layer)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H / stride, W / stride]."""
        out = F.relu_(self.conv1(x))
        if self.deform_modulated:
            offset_x, offset_y, mask = torch.chunk(self.conv2_offset(out), 3, dim=1)
            offset = torch.cat((offset_x, offset_y), dim=1)
            out = self.conv2(out, offset, mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = F.relu_(out)
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return F.relu_(out)


class BasicStem(CNNBlockBase):
    """The standard ResNet stem: a 7x7 stride-2 conv (+ norm, ReLU) and a 3x3 stride-2 max pool.

    Args:
        in_channels: number of input channels (3 for RGB/BGR images).
        out_channels: number of output channels.
        norm: normalisation after the conv (``get_norm`` name or callable).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: _Norm = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H / 4, W / 4]."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


_STAGE_INDEX = {"stem": 0, "res2": 1, "res3": 2, "res4": 3, "res5": 4}
_BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class ResNet(Backbone):
    """A ResNet made of a stem and a list of stages ``res2, res3, ...``.

    Args:
        stem: the stem module (a ``CNNBlockBase``, e.g. :class:`BasicStem`); its ``stride`` and
            ``out_channels`` define the ``"stem"`` output.
        stages: one list of ``CNNBlockBase`` blocks per stage; stage ``i`` is registered as
            ``res{i + 2}`` (an ``nn.Sequential``). Stages past the last requested output are dropped.
        num_classes: if given, add global average pooling and a ``linear`` classifier (output
            ``"linear"`` of shape (N, num_classes)).
        out_features: names of the outputs to return, among ``"stem"``, ``"res2"`` ... and
            ``"linear"``; default: the last layer.
        freeze_at: freeze the stem (1) and the first ``freeze_at - 1`` stages; see :meth:`freeze`.
        channels_last: run in channels-last memory; None (default): on the CPU only, where oneDNN's
            convolutions are faster in it (see ``libdet.layers.memory_format``).
    """

    def __init__(
        self,
        stem: CNNBlockBase,
        stages: Sequence[Sequence[CNNBlockBase]],
        num_classes: int | None = None,
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
        channels_last: bool | None = None,
    ):
        super().__init__()
        self.channels_last = channels_last
        self.stem = stem
        self.num_classes = num_classes

        current_stride = stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": stem.out_channels}

        if out_features is not None:
            unknown = [f for f in out_features if f not in _STAGE_INDEX and f != "linear"]
            if unknown:
                raise ValueError(
                    f"ResNet: unknown `out_features` {unknown}; expected names among {list(_STAGE_INDEX)} or 'linear'."
                )
            # Drop the stages after the last requested output.
            num_stages = max(_STAGE_INDEX.get(f, len(stages)) for f in out_features)
            stages = stages[:num_stages]

        stage_names: list[str] = []
        self.stages: list[nn.Sequential] = []
        name = "stem"
        curr_channels = stem.out_channels
        for i, blocks in enumerate(stages):
            name = f"res{i + 2}"
            if len(blocks) == 0:
                raise ValueError(f"ResNet: stage {name} (`stages[{i}]`) has no block.")
            for j, block in enumerate(blocks):
                if not isinstance(block, CNNBlockBase):
                    raise TypeError(f"ResNet: `stages[{i}][{j}]` must be a CNNBlockBase, got {type(block).__name__}.")
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            stage_names.append(name)
            self.stages.append(stage)
            for block in blocks:
                current_stride = int(current_stride * block.stride)
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = curr_channels = blocks[-1].out_channels
        self.stage_names = tuple(stage_names)

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(curr_channels, num_classes)
            # Sec 5.1 of "Accurate, Large Minibatch SGD": zero-mean Gaussian with std 0.01.
            nn.init.normal_(self.linear.weight, std=0.01)
            name = "linear"

        if out_features is None:
            out_features = [name]
        out_features = list(out_features)
        if len(out_features) == 0:
            raise ValueError("ResNet: `out_features` must not be empty.")
        children = [x[0] for x in self.named_children()]
        for f in out_features:
            if f not in children:
                raise ValueError(
                    f"ResNet: `out_features` entry {f!r} is not an available output; available: {children}."
                )
        self._out_features = out_features
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: Tensor[N, C, H, W] images.

        Returns:
            dict of the requested outputs: ``"stem"`` / ``"res{k}"`` -> Tensor[N, C_k, H / s_k, W / s_k],
            ``"linear"`` -> Tensor[N, num_classes].
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet takes an input of shape (N, C, H, W); got {list(x.shape)}.")
        outputs = {}
        x = self.stem(to_backbone_memory_format(x, self.channels_last))
        if "stem" in self._out_features:
            outputs["stem"] = x
        if torch.jit.is_scripting():
            x = self._scripted_stages(x, outputs)
        else:
            x = self._stages(x, outputs)
        if self.num_classes is not None:
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    @torch.jit.unused
    def _stages(self, x: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the stages on ``x``, putting the requested outputs into ``outputs``; the last output."""
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return x

    def _scripted_stages(self, x: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`_stages` for TorchScript, which cannot iterate over ``self.stages`` (a Python list of modules):
        the stages ``res2``..``res5`` unrolled (``hasattr`` is resolved at compile time)."""
        if hasattr(self, "res2"):
            x = self.res2(x)
            if "res2" in self._out_features:
                outputs["res2"] = x
        if hasattr(self, "res3"):
            x = self.res3(x)
            if "res3" in self._out_features:
                outputs["res3"] = x
        if hasattr(self, "res4"):
            x = self.res4(x)
            if "res4" in self._out_features:
                outputs["res4"] = x
        if hasattr(self, "res5"):
            x = self.res5(x)
            if "res5" in self._out_features:
                outputs["res5"] = x
        return x

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels, stride)}`` of each requested output (not for ``"linear"``)."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
            if name in self._out_feature_strides
        }

    def freeze(self, freeze_at: int = 0) -> ResNet:
        """Freeze the first stages: ``freeze_at >= 1`` freezes the stem, ``freeze_at >= k`` (k >= 2)
        also freezes ``res2`` ... ``res{k}``.

        A frozen block has ``requires_grad = False`` on every parameter and its BatchNorms converted to
        ``FrozenBatchNorm2d``. ``freeze_at = 0`` freezes nothing.

        Returns:
            the ResNet itself.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(
        block_class: type[CNNBlockBase], num_blocks: int, *, in_channels: int, out_channels: int, **kwargs: Any
    ) -> list[CNNBlockBase]:
        """Build the blocks of one stage.

        Args:
            block_class: the block class, called as ``block_class(in_channels=..., out_channels=...,
                **kwargs)``; the first block maps ``in_channels -> out_channels``, the others
                ``out_channels -> out_channels``.
            num_blocks: number of blocks.
            in_channels: input channels of the stage.
            out_channels: output channels of every block.
            **kwargs: further block arguments. An argument ``<name>_per_block`` must be a list of
                ``num_blocks`` values, and block ``i`` gets ``<name>=value[i]`` (e.g.
                ``stride_per_block=[2, 1, 1]``); other arguments are passed to every block.

        Returns:
            list of ``num_blocks`` blocks.
        """
        per_block = {}
        for k, v in kwargs.items():
            if k.endswith("_per_block"):
                base = k[: -len("_per_block")]
                if len(v) != num_blocks:
                    raise ValueError(f"make_stage: `{k}` has {len(v)} values but `num_blocks` is {num_blocks}.")
                if base in kwargs:
                    raise ValueError(f"make_stage: got both `{base}` and `{k}`; give only one.")
                per_block[base] = v
        shared = {k: v for k, v in kwargs.items() if not k.endswith("_per_block")}
        blocks = []
        for i in range(num_blocks):
            curr_kwargs = dict(shared)
            curr_kwargs.update({k: v[i] for k, v in per_block.items()})
            blocks.append(block_class(in_channels=in_channels, out_channels=out_channels, **curr_kwargs))
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(
        depth: int,
        block_class: type[CNNBlockBase] | None = None,
        *,
        width_per_group: int = 64,
        res5_dilation: int = 1,
        stem_out_channels: int = 64,
        res2_out_channels: int | None = None,
        **kwargs: Any,
    ) -> list[list[CNNBlockBase]]:
        """Build the four stages ``res2`` ... ``res5`` of a standard ResNet / ResNeXt.

        Args:
            depth: 18, 34, 50, 101 or 152.
            block_class: the block class; default :class:`BasicBlock` for depth < 50, else
                :class:`BottleneckBlock`.
            width_per_group: bottleneck width per group of ``res2`` (doubled at every stage); the
                bottleneck channels are ``num_groups * width_per_group * 2**i``. The default 64 with
                ``num_groups=1`` is the standard ResNet; ResNeXt-101 32x8d uses ``num_groups=32,
                width_per_group=8``. Only for depth >= 50.
            res5_dilation: 1, or 2 for the DC5 variant (``res5`` keeps stride 16 and uses dilation 2).
                Only for depth >= 50.
            stem_out_channels: channels of the stem's output, the input of ``res2``.
            res2_out_channels: output channels of ``res2``, doubled at every later stage; default 64
                (:class:`BasicBlock`) or 256 (:class:`BottleneckBlock`). A narrower network, e.g. a half-width
                ResNet-18, is ``stem_out_channels=32, res2_out_channels=32``.
            **kwargs: other arguments of every block, e.g. ``norm``, ``stride_in_1x1``,
                ``num_groups`` (depth >= 50), ``deform_modulated``.

        Returns:
            four lists of blocks, to pass as ``ResNet(stages=...)``.
        """
        if depth not in _BLOCKS_PER_DEPTH:
            raise ValueError(f"make_default_stages: `depth` must be one of {sorted(_BLOCKS_PER_DEPTH)}, got {depth}.")
        if res5_dilation not in (1, 2):
            raise ValueError(f"make_default_stages: `res5_dilation` must be 1 or 2, got {res5_dilation}.")
        num_blocks_per_stage = _BLOCKS_PER_DEPTH[depth]
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        if depth < 50:
            if res5_dilation != 1 or width_per_group != 64 or kwargs.get("num_groups", 1) != 1:
                raise ValueError(
                    f"make_default_stages: depth {depth} (BasicBlock) supports neither `res5_dilation`, "
                    "`width_per_group` nor `num_groups`."
                )
            kwargs = {k: v for k, v in kwargs.items() if k != "num_groups"}  # 1: BasicBlock has no groups
        if res2_out_channels is None:
            res2_out_channels = 64 if depth < 50 else 256
        out_channels = [res2_out_channels * 2**i for i in range(4)]
        in_channels = [stem_out_channels] + out_channels[:3]
        num_groups = kwargs.get("num_groups", 1)
        stages = []
        for i, (n, c_in, c_out) in enumerate(zip(num_blocks_per_stage, in_channels, out_channels)):
            stage_kwargs = dict(kwargs)
            first_stride = 1 if i == 0 or (i == 3 and res5_dilation == 2) else 2
            if depth >= 50:
                stage_kwargs["bottleneck_channels"] = num_groups * width_per_group * 2**i
                if i == 3:
                    stage_kwargs["dilation"] = res5_dilation
            stages.append(
                ResNet.make_stage(
                    block_class,
                    n,
                    stride_per_block=[first_stride] + [1] * (n - 1),
                    in_channels=c_in,
                    out_channels=c_out,
                    **stage_kwargs,
                )
            )
        return stages


make_stage = ResNet.make_stage
