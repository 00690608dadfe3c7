import logging
import random

import numpy as np
import pytest
import torch

from libdet.data.common import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    MapDataset,
    SeededIndex,
    ToIterableDataset,
)


def _dicts(n):
    return [{"file_name": f"img_{i}.jpg", "image_id": i, "width": 10 + i, "height": 12} for i in range(n)]


@pytest.mark.parametrize("serialize", [True, False])
def test_dataset_from_list(serialize):
    lst = _dicts(5)
    ds = DatasetFromList(lst, copy=True, serialize=serialize)
    assert len(ds) == 5
    assert ds[3] == lst[3]
    item = ds[3]
    item["image_id"] = -1
    assert ds[3]["image_id"] == 3 and lst[3]["image_id"] == 3


class _FailOn:
    def __init__(self, bad):
        self.bad = set(bad)

    def __call__(self, d):
        if d["file_name"] in self.bad:
            raise RuntimeError("decode failed")
        return d["image_id"]


def test_map_dataset_retries_and_logs(caplog):
    ds = MapDataset(_dicts(6), _FailOn({"img_2.jpg"}))
    with caplog.at_level(logging.WARNING, logger="libdet.data.common"):
        out = ds[2]
    assert out != 2 and 0 <= out < 6
    assert "img_2.jpg" in caplog.text and "decode failed" in caplog.text
    assert ds[1] == 1


def test_map_dataset_none_is_retried():
    ds = MapDataset(_dicts(4), lambda d: None if d["image_id"] == 0 else d["image_id"])
    assert ds[0] in (1, 2, 3)


def test_map_dataset_gives_up_with_clear_error():
    ds = MapDataset(_dicts(3), _FailOn({f"img_{i}.jpg" for i in range(3)}), max_consecutive_failures=4)
    with pytest.raises(RuntimeError, match=r"4 times in a row.*img_\d\.jpg.*decode failed"):
        ds[0]
    ds = MapDataset(_dicts(3), lambda d: None)
    with pytest.raises(RuntimeError, match="10 times.*returned None"):
        ds[1]


def _noisy(d):
    return (d["image_id"], float(np.random.rand()), float(torch.rand(1)), random.random())


def test_seeded_index_is_reproducible_and_restores_main_rngs():
    ds = MapDataset(_dicts(4), _noisy)
    np.random.seed(0)
    a = ds[SeededIndex(2, 1234)]
    after_state = np.random.rand()
    np.random.seed(0)
    torch.rand(5)
    b = ds[SeededIndex(2, 1234)]
    assert np.random.rand() == after_state  # the caller's RNG stream is untouched
    assert a == b
    assert ds[SeededIndex(2, 1235)] != a
    # retries are seeded too: the same failing sample resolves to the same replacement
    failing = MapDataset(_dicts(8), _FailOn({"img_5.jpg"}))
    assert failing[SeededIndex(5, 77)] == MapDataset(_dicts(8), _FailOn({"img_5.jpg"}))[SeededIndex(5, 77)]


def test_to_iterable_dataset_shards_workers():
    ds = ToIterableDataset(list(range(10)), list(range(10)), shard_chunk_size=2)
    assert list(ds) == list(range(10))
    loader = torch.utils.data.DataLoader(ds, num_workers=2, batch_size=None)
    assert sorted(int(x) for x in loader) == list(range(10))


def test_aspect_ratio_grouped_dataset():
    dicts = [{"width": w, "height": h, "i": i} for i, (w, h) in enumerate([(4, 2), (2, 4), (2, 4), (4, 2), (5, 1)])]
    batches = list(AspectRatioGroupedDataset(dicts, 2))
    assert [[d["i"] for d in b] for b in batches] == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="width"):
        list(AspectRatioGroupedDataset([{"x": 1}], 2))
