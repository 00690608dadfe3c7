import pytest
import torch

from libdet.modeling.matcher import Matcher

# 2 ground truths x 8 predictions. gt1's best quality (0.45) is reached by predictions 2 and 4 (a tie).
_IOU = torch.tensor(
    [
        [0.9, 0.5, 0.1, 0.05, 0.2, 0.35, 0.3, 0.2],
        [0.1, 0.2, 0.45, 0.0, 0.45, 0.3, 0.1, 0.7],
    ]
)


def test_matcher_table_rpn_thresholds():
    m = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)
    matches, labels = m(_IOU)
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8
    assert matches.tolist() == [0, 0, 1, 0, 1, 0, 0, 1]
    # [0, 0.3) -> 0, [0.3, 0.7) -> -1, [0.7, inf) -> 1 (boundaries belong to the upper interval).
    assert labels.tolist() == [1, -1, -1, 0, -1, -1, -1, 1]


def test_matcher_low_quality_matches_include_ties():
    m = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = m(_IOU)
    assert matches.tolist() == [0, 0, 1, 0, 1, 0, 0, 1]  # indices unchanged
    # gt0's best is prediction 0 (already positive); gt1's best 0.7 is prediction 7 (already positive).
    assert labels.tolist() == [1, -1, -1, 0, -1, -1, -1, 1]
    iou = _IOU.clone()
    iou[1, 7] = 0.1  # now gt1's best is 0.45, tied by predictions 2 and 4
    matches, labels = m(iou)
    assert labels.tolist() == [1, -1, 1, 0, 1, -1, -1, 0]


def test_matcher_roi_heads_single_threshold():
    m = Matcher([0.5], [0, 1])
    _, labels = m(_IOU)
    assert labels.tolist() == [1, 1, 0, 0, 0, 0, 0, 1]


def test_low_quality_with_a_zero_iou_ground_truth_marks_all_its_zero_predictions():
    # As in detectron2: a ground truth overlapping nothing has highest quality 0, reached by every prediction.
    iou = torch.tensor([[0.8, 0.0, 0.0], [0.0, 0.0, 0.0]])
    _, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(iou)
    assert labels.tolist() == [1, 1, 1]


@pytest.mark.parametrize("labels,expected", [([0, -1, 1], 0), ([-1, 0, 1], -1)])
def test_empty_ground_truth_gives_first_label(labels, expected):
    m = Matcher([0.4, 0.5], labels, allow_low_quality_matches=True)
    matches, match_labels = m(torch.zeros(0, 5))
    assert matches.tolist() == [0] * 5 and matches.dtype == torch.int64
    assert match_labels.tolist() == [expected] * 5 and match_labels.dtype == torch.int8
    matches, match_labels = m(torch.zeros(0, 0))
    assert matches.shape == (0,) and match_labels.shape == (0,)


def test_matcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="increasing"):
        Matcher([0.7, 0.3], [0, -1, 1])
    with pytest.raises(ValueError, match="labels"):
        Matcher([0.3, 0.7], [0, 1])
    with pytest.raises(ValueError, match="label"):
        Matcher([0.5], [0, 2])
    with pytest.raises(ValueError, match="positive"):
        Matcher([0.0, 0.5], [0, -1, 1])
    with pytest.raises(ValueError, match="negative"):
        Matcher([0.5], [0, 1])(torch.tensor([[-0.1, 0.5]]))
