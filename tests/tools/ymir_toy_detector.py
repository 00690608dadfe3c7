"""A deterministic detector with libdet's model interface, for the YMIR executor tests.

It boxes the pixels brighter than ``threshold`` (one detection per image) and names the class by the brightest
channel of those pixels (BGR input: blue -> 0, green -> 1, red -> 2); the score is the fraction of the box that
is bright, so a solid square scores ~1 and scattered noise scores low and moves under augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from libdet.structures import Boxes, Instances


class ToyBrightnessDetector(nn.Module):
    def __init__(self, *, threshold: float = 128.0) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=False)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = []
        for item in batched_inputs:
            image = item["image"].float()  # (3, H', W'), resized by the predictor
            height, width = item.get("height", image.shape[1]), item.get("width", image.shape[2])
            bright = image.max(dim=0).values > self.threshold
            result = Instances((height, width))
            ys, xs = torch.nonzero(bright, as_tuple=True)
            if len(ys) == 0:
                result.pred_boxes = Boxes(torch.zeros(0, 4))
                result.scores = torch.zeros(0)
                result.pred_classes = torch.zeros(0, dtype=torch.int64)
            else:
                x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                fill = bright[y1:y2, x1:x2].float().mean()
                channel = image[:, bright].mean(dim=1).argmax()
                sx, sy = width / image.shape[2], height / image.shape[1]
                box = torch.stack([x1 * sx, y1 * sy, x2 * sx, y2 * sy]).float()
                result.pred_boxes = Boxes(box[None])
                result.scores = fill[None]
                result.pred_classes = channel[None].long()
            outputs.append({"instances": result})
        return outputs
