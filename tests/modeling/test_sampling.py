import pytest
import torch

from libdet.modeling.sampling import subsample_labels


def _labels(num_pos, num_neg, num_ignore, bg_label=0, fg_label=1):
    labels = torch.cat(
        [torch.full((num_pos,), fg_label), torch.full((num_neg,), bg_label), torch.full((num_ignore,), -1)]
    )
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))
    return labels[perm]


def _check(labels, pos, neg, bg_label):
    assert pos.dtype == torch.int64 and neg.dtype == torch.int64
    assert len(set(pos.tolist())) == len(pos) and len(set(neg.tolist())) == len(neg)
    assert ((labels[pos] != -1) & (labels[pos] != bg_label)).all()
    assert (labels[neg] == bg_label).all()


def test_counts_with_enough_of_both():
    torch.manual_seed(0)
    labels = _labels(10, 20, 5)
    pos, neg = subsample_labels(labels, 16, 0.25, 0)
    assert (len(pos), len(neg)) == (4, 12)
    _check(labels, pos, neg, 0)


def test_negatives_fill_in_for_missing_positives():
    torch.manual_seed(0)
    labels = _labels(2, 50, 5)
    pos, neg = subsample_labels(labels, 16, 0.5, 0)
    assert (len(pos), len(neg)) == (2, 14)
    _check(labels, pos, neg, 0)


def test_too_few_of_both_returns_all():
    labels = _labels(3, 4, 10)
    pos, neg = subsample_labels(labels, 64, 0.25, 0)
    assert (len(pos), len(neg)) == (3, 4)
    _check(labels, pos, neg, 0)


def test_background_label_is_num_classes_for_roi_heads():
    # ROI heads: classes 0..K-1 are foreground, K is background; class 0 is a positive.
    labels = torch.tensor([0, 3, 80, 80, 80, -1, 2, 80])
    pos, neg = subsample_labels(labels, 4, 0.5, 80)
    assert len(pos) == 2 and len(neg) == 2
    _check(labels, pos, neg, 80)
    pos, neg = subsample_labels(labels, 100, 1.0, 80)
    # Every positive is taken; negatives fill the remaining budget.
    assert sorted(pos.tolist()) == [0, 1, 6] and sorted(neg.tolist()) == [2, 3, 4, 7]


def test_draw_is_random_and_seeded():
    labels = _labels(30, 30, 0)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(sorted(subsample_labels(labels, 10, 0.5, 0)[0].tolist()))
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        subsample_labels(torch.zeros(2, 2), 4, 0.5, 0)
    with pytest.raises(ValueError, match="positive_fraction"):
        subsample_labels(torch.zeros(4), 4, 1.5, 0)
