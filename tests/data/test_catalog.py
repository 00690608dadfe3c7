import pickle

import numpy as np
import pytest

from libdet.data.catalog import DatasetCatalog, Metadata, MetadataCatalog


@pytest.fixture
def name():
    n = "test_catalog_tiny_dataset"
    yield n
    DatasetCatalog.pop(n, None)
    MetadataCatalog.pop(n, None)


def test_register_get_remove(name):
    calls = []

    def load():
        calls.append(1)
        return [{"file_name": "a.jpg"}]

    DatasetCatalog.register(name, load)
    assert calls == []  # registration does not load
    assert name in DatasetCatalog.list()
    assert DatasetCatalog.get(name) == [{"file_name": "a.jpg"}]
    assert DatasetCatalog.get(name) == [{"file_name": "a.jpg"}]
    assert len(calls) == 2  # no caching
    DatasetCatalog.remove(name)
    assert name not in DatasetCatalog.list()
    with pytest.raises(KeyError, match=name):
        DatasetCatalog.remove(name)


def test_duplicate_registration_names_dataset(name):
    DatasetCatalog.register(name, lambda: [])
    with pytest.raises(ValueError, match=name):
        DatasetCatalog.register(name, lambda: [])


def test_get_unknown_lists_close_names(name):
    DatasetCatalog.register(name, lambda: [])
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get(name + "x")
    assert name in str(e.value) and "Did you mean" in str(e.value)


def test_result_must_be_list(name):
    DatasetCatalog.register(name, lambda: ({"a": 1},))
    with pytest.raises(TypeError, match=name):
        DatasetCatalog.get(name)


def test_register_rejects_non_callable(name):
    with pytest.raises(TypeError, match=name):
        DatasetCatalog.register(name, [1, 2])


def test_metadata_set_get_and_conflicts(name):
    m = MetadataCatalog.get(name)
    assert MetadataCatalog.get(name) is m
    assert m.name == name
    m.thing_classes = ["a", "b"]
    m.thing_classes = ["a", "b"]  # same value is fine
    with pytest.raises(ValueError) as e:
        m.thing_classes = ["a", "c"]
    assert name in str(e.value) and "thing_classes" in str(e.value)
    assert m.set(evaluator_type="coco", ignore_label=255) is m
    assert m.get("ignore_label") == 255
    assert m.get("missing", 7) == 7
    assert m.as_dict() == {"name": name, "thing_classes": ["a", "b"], "evaluator_type": "coco", "ignore_label": 255}
    with pytest.raises(AttributeError, match="stuff_classes"):
        _ = m.stuff_classes
    m.arr = np.arange(3)
    m.arr = np.arange(3)
    with pytest.raises(ValueError, match="arr"):
        m.arr = np.arange(4)
    MetadataCatalog.remove(name)
    assert MetadataCatalog.get(name).get("thing_classes") is None


def test_metadata_pickles():
    m = Metadata(name="x").set(thing_classes=["a"])
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.thing_classes == ["a"] and m2.name == "x"
