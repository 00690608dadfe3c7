import pytest
import torch

from libdet.checkpoint.c2_model_loading import align_and_update_state_dicts


def test_longest_dot_suffix_wins():
    model = {"backbone.res2.conv1.weight": 0, "backbone.stem.conv1.weight": 0, "head.cls.weight": 0}
    ckpt = {
        "res2.conv1.weight": torch.ones(1),
        "stem.conv1.weight": torch.full((1,), 2.0),
        "conv1.weight": torch.full((1,), 3.0),  # shorter suffix of two model keys: loses to the longer ones
        "cls.weight": torch.full((1,), 4.0),
        "s.weight": torch.full((1,), 5.0),  # "cls.weight".endswith("s.weight") but not at a dot
    }
    out = align_and_update_state_dicts(model, ckpt)
    assert out["backbone.res2.conv1.weight"].item() == 1.0
    assert out["backbone.stem.conv1.weight"].item() == 2.0
    assert out["head.cls.weight"].item() == 4.0
    # unmatched entries keep their names so the loader reports them as unexpected
    assert set(out) == set(model) | {"conv1.weight", "s.weight"}


def test_ambiguous_match_raises_naming_the_keys():
    # as detectron2: one checkpoint entry cannot go to two model parameters
    with pytest.raises(ValueError, match=r"'conv\.weight'.*\['a\.conv\.weight', 'b\.conv\.weight'\]"):
        align_and_update_state_dicts({"a.conv.weight": 0, "b.conv.weight": 0}, {"conv.weight": torch.zeros(1)})


def test_exact_name_beats_suffix_matches():
    model = {"w": 0, "x.w": 0}
    out = align_and_update_state_dicts(model, {"w": torch.ones(1)})
    assert list(out) == ["w"]
