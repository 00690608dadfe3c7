"""Tiny models and data shared by the engine tests (random tensors derived from per-sample seeds)."""

import itertools
import random

import numpy as np
import torch
from torch import nn

from libdet.data import build_detection_train_loader


def make_sample(d):
    """Mapper: an image and target drawn from the RNGs the loader seeded for this sample."""
    image = torch.randn(3, 16, 16)
    # python random and numpy are seeded per sample too: use them so they are covered
    target = float(np.random.rand()) + random.random()
    return {"image": image, "target": torch.tensor(target), "id": d["id"]}


def train_loader(num_workers=0, batch_size=2, seed=7, size=10):
    dicts = [{"id": i, "width": 16, "height": 16} for i in range(size)]
    return build_detection_train_loader(
        dicts,
        mapper=make_sample,
        total_batch_size=batch_size,
        aspect_ratio_grouping=False,
        num_workers=num_workers,
        seed=seed,
    )


class TinyNet(nn.Module):
    """A small conv net with randomness in training (dropout, random subsampling of positions)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4, 1)

    def forward(self, batch):
        x = torch.stack([b["image"] for b in batch])
        t = torch.stack([b["target"] for b in batch]).float()
        f = self.drop(torch.relu(self.bn(self.conv(x))))  # N, 4, H, W
        flat = f.flatten(2)  # N, 4, HW
        keep = torch.randperm(flat.shape[-1])[:32]
        pooled = flat[:, :, keep].mean(-1)
        pred = self.head(pooled).squeeze(1)
        if not self.training:
            return pred
        return {"loss_reg": ((pred - t) ** 2).mean(), "loss_l1": 0.1 * (pred - t).abs().mean()}


class LinearModel(nn.Module):
    """``y = w x + b`` with a mean-squared loss on a batch of ``(x, y)`` tensors."""

    def __init__(self, dim=3):
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, batch):
        x, y = batch
        return {"loss": ((self.fc(x).squeeze(1) - y) ** 2).mean()}


def cycle(batches):
    return itertools.cycle(batches)
