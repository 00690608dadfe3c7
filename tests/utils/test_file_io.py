import pytest

from libdet.utils import file_io
from libdet.utils.file_io import MODEL_ZOO_URL_PREFIX, ModelZooHandler, PathManager, atomic_write


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "results.json"
    with atomic_write(str(target)) as f:
        f.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as f:
            f.write("partial")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
    with atomic_write(str(target), "wb") as f:
        f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(target), "a"):
            pass


def test_model_zoo_prefixes_map_to_urls(monkeypatch):
    handler = ModelZooHandler()
    assert handler._url("libdet://ImageNetPretrained/MSRA/R-50.pkl") == (
        MODEL_ZOO_URL_PREFIX + "ImageNetPretrained/MSRA/R-50.pkl"
    )
    assert handler._url("detectron2://a/b.pkl") == MODEL_ZOO_URL_PREFIX + "a/b.pkl"
    fetched = []
    monkeypatch.setattr(file_io.PathManager, "get_local_path", lambda url, **kw: fetched.append(url) or "/cache/x")
    assert handler._get_local_path("libdet://a/b.pkl") == "/cache/x"
    assert fetched == [MODEL_ZOO_URL_PREFIX + "a/b.pkl"]


def test_path_manager_local_files(tmp_path):
    path = str(tmp_path / "a.txt")
    with PathManager.open(path, "w") as f:
        f.write("x")
    assert PathManager.exists(path) and PathManager.isfile(path)
    assert "libdet://" in ModelZooHandler()._get_supported_prefixes()
