"""Fixtures of the evaluation tests: tiny datasets registered in the catalogs and removed afterwards."""

import itertools

import pytest

_counter = itertools.count()


@pytest.fixture
def register_dataset():
    """``register_dataset(prefix, dicts=None, **metadata) -> name``: a uniquely named registered dataset."""
    from libdet.data.catalog import DatasetCatalog, MetadataCatalog

    names = []

    def register(prefix, dicts=None, **metadata):
        name = f"_test_eval_{prefix}_{next(_counter)}"
        DatasetCatalog.register(name, lambda: list(dicts or []))
        MetadataCatalog.get(name).set(**metadata)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
