"""``TensorMaskAnchorGenerator``: anchors plus the unit length and 5-D index of every anchor."""

from __future__ import annotations

import torch

from libdet.modeling.anchor_generator import DefaultAnchorGenerator
from libdet.structures import Boxes

__all__ = ["TensorMaskAnchorGenerator"]


class TensorMaskAnchorGenerator(DefaultAnchorGenerator):
    """:class:`DefaultAnchorGenerator` (same arguments) that also gives, for each anchor, its unit length (the
    stride of its level: the sliding window's sampling step) and its index ``(level, image, row, column,
    anchor)``, with which the mask of that anchor is picked out of the head's dense mask tensors.

    Unlike detectron2's, which returns a deep copy of everything per image, :meth:`forward` returns one list
    per level, shared by all images (they are identical); the image slot of the indexes is 0.
    """

    def forward(self, features: list[torch.Tensor]) -> tuple[list[Boxes], list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            features: one Tensor[N, C, Hi, Wi] per level (only the sizes are used).

        Returns:
            anchors: one :class:`Boxes` per level with ``Hi * Wi * A`` anchors (row, column, then anchor).
            unit_lengths: one float Tensor[Hi * Wi * A] per level, the level's stride.
            indexes: one int64 Tensor[Hi * Wi * A, 5] per level, rows ``(level, 0, row, column, anchor)``.
        """
        anchors = super().forward(features)
        unit_lengths, indexes = [], []
        for level, (feature, stride, boxes) in enumerate(zip(features, self.strides, anchors)):
            device = boxes.tensor.device
            height, width = feature.shape[-2:]
            num_cell = self.num_anchors[level]
            unit_lengths.append(torch.full((len(boxes),), float(stride), dtype=torch.float32, device=device))
            grids = torch.meshgrid(
                torch.full((1,), level, dtype=torch.int64, device=device),
                torch.zeros(1, dtype=torch.int64, device=device),
                torch.arange(height, dtype=torch.int64, device=device),
                torch.arange(width, dtype=torch.int64, device=device),
                torch.arange(num_cell, dtype=torch.int64, device=device),
                indexing="ij",
            )
            indexes.append(torch.stack(grids, dim=5).view(-1, 5))
        return anchors, unit_lengths, indexes
