"""``subsample_labels``: draw a fixed-size, class-balanced random subset of labelled predictions."""

from __future__ import annotations

import torch

from libdet.layers import nonzero_tuple

__all__ = ["subsample_labels"]


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly sample at most ``num_samples`` elements, of which at most ``positive_fraction`` are
    positive; negatives fill the rest when there are too few positives.

    Args:
        labels: Tensor[N] of labels: -1 ignore, ``bg_label`` background (negative), anything else
            foreground (positive).
        num_samples: total number of samples wanted.
        positive_fraction: the largest fraction of ``num_samples`` that may be positive
            (``int(num_samples * positive_fraction)`` positives at most).
        bg_label: the background label.

    Returns:
        pos_idx, neg_idx: int64 index tensors of the sampled positives and negatives (on ``labels``'
        device; the draw uses ``torch.randperm`` on that device, so it follows its RNG).
    """
    if labels.dim() != 1:
        raise ValueError(f"subsample_labels: `labels` must be 1-D, got shape {tuple(labels.shape)}.")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"subsample_labels: `positive_fraction` must be in [0, 1], got {positive_fraction}.")
    positive = nonzero_tuple((labels != -1) & (labels != bg_label))[0]
    negative = nonzero_tuple(labels == bg_label)[0]

    num_pos = int(num_samples * positive_fraction)
    num_pos = min(positive.numel(), num_pos)
    num_neg = num_samples - num_pos
    num_neg = min(negative.numel(), num_neg)

    perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm1], negative[perm2]
