import itertools
import time

import numpy as np
import pytest
import torch

from libdet.data.samplers import (
    GroupedBatchSampler,
    InferenceSampler,
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from libdet.utils import comm


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.fixture()
def world(monkeypatch):
    def set_world(rank, size):
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: size)

    return set_world


def test_training_sampler_epochs_are_permutations():
    s = TrainingSampler(10, seed=3)
    stream = _take(s, 30)
    for k in range(3):
        assert sorted(stream[10 * k : 10 * k + 10]) == list(range(10))
    assert stream[:10] != stream[10:20]
    assert _take(TrainingSampler(10, seed=3), 30) == stream
    assert _take(TrainingSampler(10, seed=4), 30) != stream
    assert _take(TrainingSampler(5, shuffle=False, seed=0), 7) == [0, 1, 2, 3, 4, 0, 1]


def test_training_sampler_sharding_across_ranks(world):
    world(0, 1)
    global_stream = _take(TrainingSampler(7, seed=11), 7 * 3 * 2)
    per_rank = []
    for rank in range(3):
        world(rank, 3)
        per_rank.append(_take(TrainingSampler(7, seed=11), 14))
    for rank in range(3):
        assert per_rank[rank] == global_stream[rank::3]
    # one epoch is split disjointly among the ranks
    first_epoch = [per_rank[i % 3][i // 3] for i in range(7)]
    assert sorted(first_epoch) == list(range(7))


def test_training_sampler_resume(world):
    world(1, 2)
    s = TrainingSampler(13, seed=9)
    full = _take(s, 40)
    s2 = TrainingSampler(13, seed=9)
    head = _take(s2, 17)
    state = s2.state_dict()
    assert state["position"] == 17 and state["seed"] == 9
    s3 = TrainingSampler(13, seed=123)  # seed comes from the state
    s3.load_state_dict(state)
    assert head + _take(s3, 23) == full
    # continuing iteration of the same sampler also resumes
    assert _take(s2, 23) == full[17:]
    with pytest.raises(ValueError, match="size"):
        TrainingSampler(12, seed=9).load_state_dict(state)
    world(0, 3)
    with pytest.raises(ValueError, match="world_size"):
        TrainingSampler(13, seed=9).load_state_dict(state)


def test_training_sampler_far_position_is_cheap():
    s = TrainingSampler(1000, seed=1)
    s.load_state_dict({"seed": 1, "position": 10**9 - 1})
    t0 = time.perf_counter()
    a = _take(s, 2)
    assert time.perf_counter() - t0 < 1.0
    s2 = TrainingSampler(1000, seed=1)
    s2.load_state_dict({"seed": 1, "position": 10**9})
    assert _take(s2, 1) == a[1:]


def test_random_subset_sampler():
    s = RandomSubsetTrainingSampler(20, 0.25, seed_shuffle=1, seed_subset=2)
    stream = _take(s, 15)
    subset = set(stream[:5])
    assert len(subset) == 5 and set(stream) == subset
    state = s.state_dict()
    s2 = RandomSubsetTrainingSampler(20, 0.25, seed_shuffle=7, seed_subset=2)
    s2.load_state_dict(state)
    assert _take(s2, 5) == _take(s, 5)
    with pytest.raises(ValueError, match="seed_subset"):
        RandomSubsetTrainingSampler(20, 0.25, seed_shuffle=7, seed_subset=3).load_state_dict(state)


def test_repeat_factors_hand_computed():
    dicts = [
        {"annotations": [{"category_id": 0}]},
        {"annotations": [{"category_id": 0}, {"category_id": 0}]},
        {"annotations": [{"category_id": 0}]},
        {"annotations": [{"category_id": 0}, {"category_id": 1}]},
        {"annotations": []},
    ]
    # f(0) = 4/5 -> r = max(1, sqrt(0.5 / 0.8)) = 1 ; f(1) = 1/5 -> r = sqrt(0.5 / 0.2) = sqrt(2.5)
    rf = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.5)
    np.testing.assert_allclose(rf.numpy(), [1, 1, 1, np.sqrt(2.5), 1], rtol=1e-6)
    rf_lin = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.5, sqrt=False)
    np.testing.assert_allclose(rf_lin.numpy(), [1, 1, 1, 2.5, 1], rtol=1e-6)


def test_repeat_factor_sampler_stochastic_rounding_and_resume(world):
    factors = torch.tensor([1.0, 2.5, 0.5])
    s = RepeatFactorTrainingSampler(factors, seed=0)
    counts = np.zeros(3)
    n_epochs = 400
    for epoch in range(n_epochs):
        idx = s._epoch_indices(epoch)
        c = np.bincount(idx.numpy(), minlength=3)
        assert c[0] == 1 and c[1] in (2, 3) and c[2] in (0, 1)
        counts += c
    np.testing.assert_allclose(counts / n_epochs, [1.0, 2.5, 0.5], atol=0.1)
    world(0, 2)
    full = _take(RepeatFactorTrainingSampler(factors, seed=5), 50)
    s1 = RepeatFactorTrainingSampler(factors, seed=5)
    head = _take(s1, 21)
    state = s1.state_dict()
    s2 = RepeatFactorTrainingSampler(factors, seed=1)
    s2.load_state_dict(state)
    assert head + _take(s2, 29) == full
    s3 = RepeatFactorTrainingSampler(factors, seed=1)  # without epoch hints: located by scanning
    s3.load_state_dict({"seed": 5, "position": 21, "world_size": 2})
    assert _take(s3, 29) == full[21:]


def test_inference_sampler_shards(world):
    shards = []
    for rank in range(3):
        world(rank, 3)
        shards.append(list(InferenceSampler(10)))
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    world(1, 4)
    assert list(InferenceSampler(2)) == [1] and len(InferenceSampler(2)) == 1
    world(3, 4)
    assert list(InferenceSampler(2)) == []


def test_grouped_batch_sampler():
    group_ids = [0, 1, 0, 1, 0, 0, 1, 1]
    batches = list(GroupedBatchSampler(list(range(8)), group_ids, 2))
    assert batches == [[0, 2], [1, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError):
        GroupedBatchSampler(list(range(8)), group_ids, 0)
