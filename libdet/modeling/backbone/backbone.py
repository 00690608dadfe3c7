"""``Backbone``: the abstract base of every feature extractor, and its shape contract."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from libdet.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Abstract base class of network backbones.

    A backbone maps an image batch ``Tensor[N, C, H, W]`` to a dict of named feature maps, and reports
    the channels and stride of each of them with :meth:`output_shape`. Subclasses set
    ``_out_features`` (list of names), ``_out_feature_channels`` and ``_out_feature_strides``
    (dicts keyed by name), or override :meth:`output_shape`.
    """

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    def __init__(self):
        super().__init__()

    @abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: Tensor[N, C, H, W] image batch.

        Returns:
            dict mapping each output feature name to a Tensor[N, C_i, H / stride_i, W / stride_i].
        """

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be divisible by this (0 = no requirement).

        Detectors pad their input batch to a multiple of it (e.g. FPN needs the largest stride).
        """
        return 0

    @property
    def padding_constraints(self) -> dict[str, int]:
        """Extra padding requirements of the input, beyond ``size_divisibility``.

        Keys currently understood by ``ImageList.from_tensors``:
            - ``"size_divisibility"``: overrides :attr:`size_divisibility` when present.
            - ``"square_size"``: pad every input to this square size (0 = no square padding).
        """
        return {}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Return ``{name: ShapeSpec(channels=..., stride=...)}`` for each output feature."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
