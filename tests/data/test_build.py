import logging
import pickle
import random

import numpy as np
import pytest
import torch

import libdet.data.transforms as T
from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    load_proposals_into_dataset,
)
from libdet.data.errors import ImageReadError
from libdet.utils import comm


def _dicts(n=23):
    out = []
    for i in range(n):
        w, h = (40, 24) if i % 3 else (24, 40)
        out.append(
            {
                "file_name": f"img_{i}.png",
                "image_id": i,
                "width": w,
                "height": h,
                "annotations": [{"bbox": [1, 1, 5, 5], "bbox_mode": 0, "category_id": i % 2}],
            }
        )
    return out


class _AugMapper:
    """Makes an image from the dict and applies random augmentations (np, torch and python RNGs)."""

    def __call__(self, d):
        base = np.random.RandomState(d["image_id"]).randint(0, 255, (d["height"], d["width"], 3)).astype(np.uint8)
        aug_input = T.AugInput(base)
        T.AugmentationList([T.RandomCrop("relative_range", (0.5, 0.5)), T.RandomFlip(), T.RandomBrightness(0.5, 1.5)])(
            aug_input
        )
        return {
            "image_id": d["image_id"],
            "width": d["width"],
            "height": d["height"],
            "image": torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))),
            "noise": torch.rand(2),
            "py": random.random(),
        }


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for ba, bb in zip(a, b):
        assert [d["image_id"] for d in ba] == [d["image_id"] for d in bb]
        for da, db in zip(ba, bb):
            assert torch.equal(da["image"], db["image"])
            assert torch.equal(da["noise"], db["noise"]) and da["py"] == db["py"]


def _loader(num_workers, **kw):
    return build_detection_train_loader(
        _dicts(), mapper=_AugMapper(), total_batch_size=3, num_workers=num_workers, seed=42, **kw
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_matches_uninterrupted(num_workers):
    n, m = 5, 4
    reference = _take(iter(_loader(0)), n + m)
    # aspect-ratio grouping: every batch is all-landscape or all-portrait
    for batch in reference:
        assert len({d["width"] > d["height"] for d in batch}) == 1
    first = _loader(num_workers)
    it = iter(first)
    head = _take(it, n)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    assert state["batches_consumed"] == n and state["seed"] == 42
    del it
    resumed = _loader(
        num_workers,
    )
    resumed.load_state_dict(state)
    tail = _take(iter(resumed), m)
    _assert_same_batches(head + tail, reference)


def test_reiterating_continues_and_state_counts_consumed_batches():
    loader = _loader(2, aspect_ratio_grouping=False)
    it = iter(loader)
    a = _take(it, 2)
    assert loader.state_dict()["batches_consumed"] == 2  # not the prefetched ones
    del it
    b = _take(iter(loader), 3)
    ref = _take(iter(_loader(0, aspect_ratio_grouping=False)), 5)
    _assert_same_batches(a + b, ref)


def test_load_state_checks_batch_size():
    state = _loader(0).state_dict()
    other = build_detection_train_loader(_dicts(), total_batch_size=4, seed=42)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


def test_identity_mapper_and_rank_sharding(monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="total_batch_size"):
        build_detection_train_loader(_dicts(), total_batch_size=3, seed=0)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        loader = build_detection_train_loader(_dicts(10), total_batch_size=4, seed=0, aspect_ratio_grouping=False)
        batches = _take(iter(loader), 2)  # 2 batches of 2 per rank = 8 of the first epoch of 10
        assert all(len(b) == 2 and isinstance(b[0], dict) for b in batches)
        seen.append([d["image_id"] for b in batches for d in b])
    assert not set(seen[0]) & set(seen[1])


def test_missing_size_for_grouping_names_file():
    bad = _dicts(3)
    del bad[1]["width"]
    with pytest.raises(ValueError, match="img_1.png"):
        build_detection_train_loader(bad, total_batch_size=2, seed=0)


def test_test_loader_covers_each_image_once():
    loader = build_detection_test_loader(_dicts(5), mapper=lambda d: d["image_id"], batch_size=2)
    assert list(loader) == [[0, 1], [2, 3], [4]]


def test_test_loader_stops_at_a_bad_image_instead_of_replacing_it():
    def mapper(d):
        if d["image_id"] == 3:
            raise ImageReadError(f"cannot decode image file '{d['file_name']}'")
        return d["image_id"]

    loader = build_detection_test_loader(_dicts(5), mapper=mapper, batch_size=2)
    with pytest.raises(RuntimeError, match=r"(?s)1 of 5 samples failed.*img_3\.png"):
        list(loader)


def test_get_detection_dataset_dicts(caplog, tmp_path):
    dicts = _dicts(6)
    dicts[2]["annotations"] = []
    dicts[4]["annotations"][0]["iscrowd"] = 1
    DatasetCatalog.register("_build_test_a", lambda: [dict(d) for d in dicts])
    DatasetCatalog.register("_build_test_b", lambda: [dict(d) for d in dicts[:2]])
    DatasetCatalog.register("_build_test_empty", lambda: [])
    MetadataCatalog.get("_build_test_a").thing_classes = ["cat", "dog"]
    MetadataCatalog.get("_build_test_b").thing_classes = ["cat", "dog"]
    with caplog.at_level(logging.INFO, logger="libdet.data.build"):
        out = get_detection_dataset_dicts(["_build_test_a", "_build_test_b"])
    assert [d["image_id"] for d in out] == [0, 1, 3, 5, 0, 1]
    assert "Removed 2 images" in caplog.text and "cat" in caplog.text and "total" in caplog.text
    assert len(get_detection_dataset_dicts("_build_test_a", filter_empty=False)) == 6
    with pytest.raises(ValueError, match="_build_test_empty"):
        get_detection_dataset_dicts(["_build_test_a", "_build_test_empty"])
    with pytest.raises(KeyError, match="_build_test_nope"):
        get_detection_dataset_dicts("_build_test_nope")

    proposals = {
        "ids": [5, 1, 0, 3],
        "boxes": [np.full((2, 4), i, np.float32) for i in range(4)],
        "objectness_logits": [np.zeros(2, np.float32)] * 4,
    }
    pfile = tmp_path / "props.pkl"
    pfile.write_bytes(pickle.dumps(proposals))
    loaded = load_proposals_into_dataset([dict(d) for d in _dicts(2)], str(pfile))
    assert loaded[0]["proposal_boxes"][0, 0] == 2 and loaded[1]["proposal_boxes"][0, 0] == 1
    with pytest.raises(ValueError, match="image_id=2"):
        load_proposals_into_dataset([dict(d) for d in _dicts(3)], str(pfile))
