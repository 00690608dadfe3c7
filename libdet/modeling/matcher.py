"""``Matcher``: assigns each prediction (anchor, proposal) to a ground-truth element by IoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from libdet.layers import nonzero_tuple

__all__ = ["Matcher"]


class Matcher:
    """Match every prediction to its best ground truth and label the match by its quality.

    The quality of prediction ``j`` is ``q_j = max_i M[i, j]`` over the ground truths ``i`` of the
    match-quality matrix ``M`` (e.g. pairwise IoU). With ``thresholds = [t_1, ..., t_k]`` extended to
    ``[-inf, t_1, ..., t_k, inf]``, a prediction with ``t_{l} <= q_j < t_{l+1}`` gets ``labels[l]``:
    1 (positive), 0 (negative) or -1 (ignored).

    Example: ``Matcher([0.3, 0.7], [0, -1, 1])`` labels IoU < 0.3 as negative, [0.3, 0.7) as ignored
    and >= 0.7 as positive.

    Args:
        thresholds: increasing positive thresholds.
        labels: ``len(thresholds) + 1`` labels in {-1, 0, 1}, one per interval.
        allow_low_quality_matches: additionally label positive, for each ground truth, every
            prediction that has the highest quality with it (all ties), even if below the positive
            threshold (Faster R-CNN's RPN rule, Sec. 3.1.2 of https://arxiv.org/abs/1506.01497). The
            match index itself is not changed.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if len(thresholds) == 0 or not thresholds[0] > 0:
            raise ValueError(f"Matcher: `thresholds` must be non-empty and positive, got {thresholds}.")
        thresholds.insert(0, -float("inf"))
        thresholds.append(float("inf"))
        if not all(low <= high for low, high in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher: `thresholds` must be increasing, got {thresholds[1:-1]}.")
        if not all(label in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher: every label must be -1, 0 or 1, got {list(labels)}.")
        if len(labels) != len(thresholds) - 1:
            raise ValueError(
                f"Matcher: need len(thresholds) + 1 = {len(thresholds) - 1} labels, got {len(labels)} ({list(labels)})."
            )
        self.thresholds: list[float] = thresholds
        self.labels: list[int] = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            match_quality_matrix: Tensor[M, N], the quality (e.g. IoU >= 0) of each of the M ground
                truths with each of the N predictions.

        Returns:
            matches: int64 Tensor[N], index in [0, M) of the matched ground truth of each prediction.
            match_labels: int8 Tensor[N], the label (1, 0 or -1) of each match.

            With no ground truth (M == 0), every match index is 0 and every label is ``labels[0]``
            (the quality is taken as 0, so usually background).
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"Matcher: `match_quality_matrix` must have shape (M, N), got {tuple(match_quality_matrix.shape)}."
            )
        if match_quality_matrix.numel() == 0:
            num_preds = match_quality_matrix.size(1)
            default_matches = match_quality_matrix.new_full((num_preds,), 0, dtype=torch.int64)
            default_match_labels = match_quality_matrix.new_full((num_preds,), self.labels[0], dtype=torch.int8)
            return default_matches, default_match_labels

        if not torch.jit.is_tracing() and not bool((match_quality_matrix >= 0).all()):
            raise ValueError("Matcher: `match_quality_matrix` has negative entries; qualities must be >= 0.")

        # For each prediction, its best ground truth.
        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            low_high = (matched_vals >= low) & (matched_vals < high)
            match_labels[low_high] = label

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(match_labels, match_quality_matrix)
        return matches, match_labels

    def set_low_quality_matches_(self, match_labels: torch.Tensor, match_quality_matrix: torch.Tensor) -> None:
        """Label positive (in place) every prediction whose quality with some ground truth equals that
        ground truth's highest quality over all predictions (ties included)."""
        highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)
        _, pred_inds_with_highest_quality = nonzero_tuple(match_quality_matrix == highest_quality_foreach_gt[:, None])
        match_labels[pred_inds_with_highest_quality] = 1
