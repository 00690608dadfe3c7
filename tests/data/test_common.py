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
from libdet.data.errors import AnnotationError, DataError, ImageReadError


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
    def __init__(self, bad, error=ImageReadError):
        self.bad = set(bad)
        self.error = error

    def __call__(self, d):
        if d["file_name"] in self.bad:
            raise self.error("decode failed")
        return d["image_id"]


def test_map_dataset_retries_and_logs(caplog):
    ds = MapDataset(_dicts(6), _FailOn({"img_2.jpg"}), max_failed_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="libdet.data.common"):
        out = ds[2]
    assert out != 2 and 0 <= out < 6
    assert "img_2.jpg" in caplog.text and "decode failed" in caplog.text
    assert ds[1] == 1


def test_map_dataset_none_is_retried():
    ds = MapDataset(_dicts(4), lambda d: None if d["image_id"] == 0 else d["image_id"])
    assert ds[0] in (1, 2, 3)


def test_map_dataset_gives_up_with_clear_error():
    bad = {f"img_{i}.jpg" for i in range(3)}
    ds = MapDataset(_dicts(3), _FailOn(bad), max_consecutive_failures=4, max_failed_fraction=1.0)
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
    failing = [MapDataset(_dicts(8), _FailOn({"img_5.jpg"}), max_failed_fraction=0.5) for _ in range(2)]
    assert failing[0][SeededIndex(5, 77)] == failing[1][SeededIndex(5, 77)]


@pytest.mark.parametrize("error", [KeyError, TypeError, ZeroDivisionError, ValueError, OSError])
def test_map_dataset_programming_errors_propagate(error):
    """A bug in the mapper (any exception that is not a DataError) raises at once instead of being retried."""
    ds = MapDataset(_dicts(6), _FailOn({"img_2.jpg"}, error=error), max_failed_fraction=1.0)
    assert ds[1] == 1
    with pytest.raises(error, match="decode failed") as e:
        ds[2]
    if hasattr(e.value, "__notes__"):  # Python >= 3.11: the note names the sample
        assert "img_2.jpg" in "".join(e.value.__notes__)
    with pytest.raises(error):
        ds[SeededIndex(2, 5)]


@pytest.mark.parametrize("error", [AnnotationError, ImageReadError, DataError])
def test_map_dataset_retries_every_data_error(error):
    ds = MapDataset(_dicts(6), _FailOn({"img_2.jpg"}, error=error), max_failed_fraction=0.5)
    assert ds[2] in (0, 1, 3, 4, 5)
    assert list(ds.failed_samples) == [2] and "img_2.jpg" in ds.failed_samples[2]


def test_map_dataset_stops_when_too_many_samples_fail():
    """Default bound: 1 % of the dataset. 2 bad images of 200 are tolerated, a third stops with a summary."""
    bad = {"img_10.jpg", "img_20.jpg", "img_30.jpg"}
    ds = MapDataset(_dicts(200), _FailOn(bad))
    assert ds[10] not in (10, 20, 30) and ds[20] not in (10, 20, 30)
    with pytest.raises(RuntimeError, match="3 of 200 samples failed") as e:
        ds[30]
    message = str(e.value)
    assert "max_failed_fraction=0.01" in message
    assert all(name in message for name in bad) and "decode failed" in message
    # a dataset of fewer than 100 samples tolerates no bad sample by default
    with pytest.raises(RuntimeError, match="(?s)1 of 50 samples failed.*img_3.jpg"):
        MapDataset(_dicts(50), _FailOn({"img_3.jpg"}))[3]
    with pytest.raises(ValueError, match="max_failed_fraction"):
        MapDataset(_dicts(5), _noisy, max_failed_fraction=1.5)


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
