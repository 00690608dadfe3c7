"""LVIS category tables are read from the annotation jsons under $LIBDET_DATASETS."""

import importlib
import json

import pytest

from libdet.data.datasets import lvis_v0_5_categories, lvis_v1_categories, lvis_v1_category_image_count


def _write(path, categories):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))


def _cat(i, name, count):
    return {
        "id": i,
        "name": name,
        "synset": f"{name}.n.01",
        "synonyms": [name],
        "def": "d",
        "frequency": "r",
        "image_count": count,
        "instance_count": 2 * count,
    }


def test_tables_come_from_the_jsons(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_DATASETS", str(tmp_path))
    _write(tmp_path / "lvis/lvis_v1_val.json", [_cat(2, "banana", 1), _cat(1, "aerosol_can", 2)])
    _write(tmp_path / "lvis/lvis_v1_train.json", [_cat(1, "aerosol_can", 64), _cat(2, "banana", 9)])
    _write(tmp_path / "lvis/lvis_v0.5_val.json", [_cat(1, "acorn", 3)])
    cats = lvis_v1_categories.LVIS_CATEGORIES
    assert [c["name"] for c in cats] == ["aerosol_can", "banana"]  # sorted by id
    assert "image_count" not in cats[0] and cats[0]["synset"] == "aerosol_can.n.01"
    assert lvis_v1_category_image_count.LVIS_CATEGORY_IMAGE_COUNT == [
        {"id": 1, "image_count": 64},
        {"id": 2, "image_count": 9},
    ]
    assert [c["name"] for c in lvis_v0_5_categories.LVIS_CATEGORIES] == ["acorn"]
    from libdet.data.datasets.lvis_v1_categories import LVIS_CATEGORIES  # `from ... import` works too

    assert LVIS_CATEGORIES == cats


def test_missing_json_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_DATASETS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"lvis_v1_train\.json.*LIBDET_DATASETS"):
        lvis_v1_category_image_count.LVIS_CATEGORY_IMAGE_COUNT  # noqa: B018
    with pytest.raises(AttributeError):
        importlib.import_module("libdet.data.datasets.lvis_v1_categories").NOT_A_TABLE  # noqa: B018
