"""Feature Pyramid Network (https://arxiv.org/abs/1612.03144) on top of any :class:`Backbone`.

State-dict keys match detectron2's: ``fpn_lateral{k}`` / ``fpn_output{k}`` for each input stage
(``k = log2(stride)``, registered from the finest stage up), then ``top_block.*``, then ``bottom_up.*``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import Conv2d, get_norm
from libdet.utils.fvcore_nn import c2_xavier_fill

from .backbone import Backbone

__all__ = ["FPN", "LastLevelMaxPool", "LastLevelP6P7"]


class LastLevelMaxPool(nn.Module):
    """Adds ``p6`` to the pyramid: a stride-2 subsampling (max pool of kernel 1) of ``p5``.

    Used by Faster / Mask R-CNN FPN models (``p6`` only feeds the RPN).
    """

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tensor[N, C, H, W] -> [Tensor[N, C, ceil(H / 2), ceil(W / 2)]]."""
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """Adds ``p6`` and ``p7`` to the pyramid (RetinaNet): ``p6 = conv3x3/2(in)``,
    ``p7 = conv3x3/2(relu(p6))``.

    Args:
        in_channels: channels of the input feature.
        out_channels: channels of ``p6`` and ``p7``.
        in_feature: the feature it is computed from: a bottom-up output (``"res5"``, the RetinaNet
            default) or a pyramid level (``"p5"``).
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            c2_xavier_fill(module)

    def forward(self, c5: torch.Tensor) -> list[torch.Tensor]:
        """Tensor[N, in_channels, H, W] -> [p6 Tensor[N, C, H/2, W/2], p7 Tensor[N, C, H/4, W/4]] (ceil)."""
        p6 = self.p6(c5)
        p7 = self.p7(F.relu(p6))
        return [p6, p7]


class FPN(Backbone):
    """A feature pyramid: lateral 1x1 convs, a top-down path with nearest upsampling, and 3x3 output
    convs, on selected outputs of a bottom-up backbone.

    Args:
        bottom_up: the bottom-up backbone; its outputs named in ``in_features`` must have strides that
            double from one to the next.
        in_features: names of the bottom-up outputs to use, finest first (e.g. ``["res2", "res3",
            "res4", "res5"]``). Output ``p{k}`` is built from the input of stride ``2**k``.
        out_channels: channels of every pyramid level.
        norm: normalisation after each lateral and output conv (``get_norm`` name or callable); the
            convs have a bias only when it is empty.
        top_block: optional module adding coarser levels (e.g. :class:`LastLevelMaxPool`,
            :class:`LastLevelP6P7`). It needs ``num_levels`` and ``in_feature`` attributes and maps that
            feature (a bottom-up output or a pyramid level) to a list of ``num_levels`` tensors.
        fuse_type: how a lateral feature and the upsampled top-down feature are fused, ``"sum"`` or
            ``"avg"``.
        square_pad: if > 0, inputs must be padded to this square size (``padding_constraints``).
    """

    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: Sequence[str],
        out_channels: int,
        norm: str | Callable[[int], nn.Module] | None = "",
        top_block: nn.Module | None = None,
        fuse_type: str = "sum",
        square_pad: int = 0,
    ):
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"FPN: `bottom_up` must be a Backbone, got {type(bottom_up).__name__}.")
        if not in_features:
            raise ValueError("FPN: `in_features` must name at least one bottom-up output.")
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f'FPN: `fuse_type` must be "sum" or "avg", got {fuse_type!r}.')

        input_shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(
                f"FPN: `in_features` {missing} are not outputs of the bottom-up backbone "
                f"(it has {list(input_shapes)}); set its `out_features`."
            )
        strides = [input_shapes[f].stride for f in in_features]
        in_channels_per_feature = [input_shapes[f].channels for f in in_features]
        _assert_strides_are_log2_contiguous(strides, in_features)

        lateral_convs = []
        output_convs = []
        use_bias = norm == "" or norm is None
        stage = 0
        for in_channels, stride in zip(in_channels_per_feature, strides):
            lateral_conv = Conv2d(
                in_channels, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(norm, out_channels)
            )
            output_conv = Conv2d(
                out_channels,
                out_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            c2_xavier_fill(lateral_conv)
            c2_xavier_fill(output_conv)
            stage = int(math.log2(stride))
            self.add_module(f"fpn_lateral{stage}", lateral_conv)
            self.add_module(f"fpn_output{stage}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Plain lists (the modules are registered above), coarsest first as the top-down path runs.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up

        self._out_feature_strides: dict[str, int] = {f"p{int(math.log2(s))}": s for s in strides}
        if self.top_block is not None:
            for s in range(stage, stage + self.top_block.num_levels):
                self._out_feature_strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        """The largest input stride: inputs padded to a multiple of it give aligned pyramid levels."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: Tensor[N, C, H, W] images; H and W should be multiples of :attr:`size_divisibility`.

        Returns:
            ``{"p{k}": Tensor[N, out_channels, H / 2**k, W / 2**k]}`` for every level, finest first.
        """
        bottom_up_features = self.bottom_up(x)
        results = []
        if torch.jit.is_scripting():
            results = self._scripted_top_down(bottom_up_features)
        else:
            results = self._top_down(bottom_up_features)

        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_in_feature = bottom_up_features[self.top_block.in_feature]
            elif self.top_block.in_feature in self._out_features[: len(results)]:
                top_block_in_feature = results[self._out_features.index(self.top_block.in_feature)]
            else:
                raise ValueError(
                    f"FPN: `top_block.in_feature` '{self.top_block.in_feature}' is neither a bottom-up "
                    f"output ({list(bottom_up_features.keys())}) nor a pyramid level built from `in_features` "
                    f"({self._out_features[: len(results)]})."
                )
            results.extend(self.top_block(top_block_in_feature))
        if len(results) != len(self._out_features):
            raise ValueError(
                f"FPN: produced {len(results)} levels but expected {len(self._out_features)} "
                f"({self._out_features}); check `top_block.num_levels`."
            )
        return {name: level for name, level in zip(self._out_features, results)}  # TorchScript has no dict(zip())

    @torch.jit.unused
    def _top_down(self, bottom_up_features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The top-down path: the output of every level built from ``in_features``, finest first."""
        results: list[torch.Tensor] = []
        prev_features = bottom_up_features[self.in_features[-1]]
        for idx, (lateral_conv, output_conv) in enumerate(zip(self.lateral_convs, self.output_convs)):
            lateral_features = lateral_conv(bottom_up_features[self.in_features[-idx - 1]])
            prev_features = self._fuse(lateral_features, prev_features, idx == 0)
            results.insert(0, output_conv(prev_features))
        return results

    def _scripted_top_down(self, bottom_up_features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`_top_down` for TorchScript, which cannot iterate over ``self.lateral_convs`` (a Python list of
        modules): the levels ``fpn_lateral6``..``fpn_lateral2`` unrolled (``hasattr`` is resolved at compile
        time)."""
        results: list[torch.Tensor] = []
        prev_features = bottom_up_features[self.in_features[-1]]
        idx = 0
        if hasattr(self, "fpn_lateral6"):
            lateral_features = self.fpn_lateral6(bottom_up_features[self.in_features[-idx - 1]])
            prev_features = self._fuse(lateral_features, prev_features, idx == 0)
            results.insert(0, self.fpn_output6(prev_features))
            idx += 1
        if hasattr(self, "fpn_lateral5"):
            lateral_features = self.fpn_lateral5(bottom_up_features[self.in_features[-idx - 1]])
            prev_features = self._fuse(lateral_features, prev_features, idx == 0)
            results.insert(0, self.fpn_output5(prev_features))
            idx += 1
        if hasattr(self, "fpn_lateral4"):
            lateral_features = self.fpn_lateral4(bottom_up_features[self.in_features[-idx - 1]])
            prev_features = self._fuse(lateral_features, prev_features, idx == 0)
            results.insert(0, self.fpn_output4(prev_features))
            idx += 1
        if hasattr(self, "fpn_lateral3"):
            lateral_features = self.fpn_lateral3(bottom_up_features[self.in_features[-idx - 1]])
            prev_features = self._fuse(lateral_features, prev_features, idx == 0)
            results.insert(0, self.fpn_output3(prev_features))
            idx += 1
        if hasattr(self, "fpn_lateral2"):
            lateral_features = self.fpn_lateral2(bottom_up_features[self.in_features[-idx - 1]])
            prev_features = self._fuse(lateral_features, prev_features, idx == 0)
            results.insert(0, self.fpn_output2(prev_features))
            idx += 1
        if idx != len(self.in_features):
            raise RuntimeError("FPN: scripting supports lateral levels 2 to 6 only.")
        return results

    def _fuse(self, lateral_features: torch.Tensor, prev_features: torch.Tensor, first: bool) -> torch.Tensor:
        """A level of the top-down path: the lateral features plus the upsampled coarser level."""
        if first:
            return lateral_features
        # Nearest 2x upsampling (sized to the lateral map, which is the same for divisible inputs).
        top_down_features = F.interpolate(prev_features, size=lateral_features.shape[-2:], mode="nearest")
        prev_features = lateral_features + top_down_features
        if self._fuse_type == "avg":
            prev_features = prev_features / 2
        return prev_features


def _assert_strides_are_log2_contiguous(strides: list[int], in_features: Sequence[str]) -> None:
    for i in range(1, len(strides)):
        if strides[i] != 2 * strides[i - 1]:
            raise ValueError(
                f"FPN: strides of `in_features` {list(in_features)} must double from one to the next, got {strides}."
            )
    if strides[0] <= 0 or 2 ** int(round(math.log2(strides[0]))) != strides[0]:
        raise ValueError(f"FPN: strides must be powers of 2, got {strides}.")
