"""The lazy loader of compiled ops (libdet/layers/_ops.py)."""

import importlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libdet.layers import _ops

REPO_ROOT = Path(__file__).resolve().parents[2]
CSRC = REPO_ROOT / "csrc"
LOGGER = "libdet.layers._ops"


@pytest.fixture
def no_disable_env(monkeypatch):
    monkeypatch.delenv("LIBDET_DISABLE_OPS", raising=False)


def _require_default_build(name: str) -> None:
    if not _ops.load_op(name):
        pytest.skip(f"compiled {name} unavailable: {_ops.ops_status()[name]}")


def _run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=300)


def test_op_names():
    assert _ops.OP_NAMES == ("box_iou_rotated", "nms_rotated", "roi_align_rotated", "coco_eval")
    with pytest.raises(ValueError, match="Unknown libdet op 'nms'"):
        _ops.load_op("nms")


def test_import_compiles_and_loads_nothing():
    result = _run_python(
        "-c",
        "import torch, libdet.layers\n"
        "from libdet.layers import _ops\n"
        "assert set(_ops.ops_status().values()) == {'not loaded yet'}, _ops.ops_status()\n"
        "assert not hasattr(torch.ops.libdet, 'box_iou_rotated')\n"
        "print('lazy')\n",
        LIBDET_DISABLE_OPS="",
    )
    assert result.returncode == 0, result.stderr
    assert "lazy" in result.stdout


def test_disable_all_forces_twins(monkeypatch, caplog):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "1")
    loader = _ops._OpLoader()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not any(loader.load_op(name) for name in _ops.OP_NAMES)
        assert not loader.use_kernel("box_iou_rotated", "cpu")
        assert not loader.use_kernel("box_iou_rotated", torch.device("cpu"))  # logged once only
    assert loader.ops_status() == {name: "disabled by LIBDET_DISABLE_OPS" for name in _ops.OP_NAMES}
    assert loader._results == {}  # nothing was built
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == ["libdet op box_iou_rotated: using the pure-PyTorch twin (disabled by LIBDET_DISABLE_OPS)"]


def test_disable_list(monkeypatch):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "nms_rotated, roi_align_rotated")
    loader = _ops._OpLoader()
    assert not loader.load_op("nms_rotated")
    assert loader.ops_status() == {
        "box_iou_rotated": "not loaded yet",
        "nms_rotated": "disabled by LIBDET_DISABLE_OPS",
        "roi_align_rotated": "disabled by LIBDET_DISABLE_OPS",
        "coco_eval": "not loaded yet",
    }


def test_disable_env_routes_every_wrapper_to_its_twin(monkeypatch):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "1")
    calls = []

    def spy(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    rotated_boxes = importlib.import_module("libdet.layers.rotated_boxes")
    nms = importlib.import_module("libdet.layers.nms")
    roi_align_rotated = importlib.import_module("libdet.layers.roi_align_rotated")
    spy(rotated_boxes, "_box_iou_rotated_twin")
    spy(nms, "_nms_rotated_twin")
    spy(roi_align_rotated, "_roi_align_rotated_twin")
    boxes = torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0], [5.0, 5.5, 4.0, 2.0, 30.0]])
    rotated_boxes.box_iou_rotated(boxes, boxes)
    nms.nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)
    roi_align_rotated.roi_align_rotated(torch.rand(1, 2, 8, 8), torch.tensor([[0.0, 4, 4, 3, 3, 10]]), 2, 1.0, 0)
    assert calls == ["_box_iou_rotated_twin", "_nms_rotated_twin", "_roi_align_rotated_twin"]


def test_status_and_log_after_loading(no_disable_env, caplog):
    _require_default_build("box_iou_rotated")
    assert _ops.ops_status()["box_iou_rotated"] in ("compiled (cpu)", "compiled (cpu+cuda)")
    assert _ops.has_op("box_iou_rotated")
    loader = _ops._OpLoader()  # fresh state; finds the build in the cache
    assert loader.ops_status()["box_iou_rotated"] == "not loaded yet"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert loader.use_kernel("box_iou_rotated", "cpu")
        assert loader.use_kernel("box_iou_rotated", "cpu")
        assert not loader.use_kernel("box_iou_rotated", "mps")
    assert loader.ops_status()["box_iou_rotated"] == _ops.ops_status()["box_iou_rotated"]
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == [
        "libdet op box_iou_rotated: using compiled kernel (cpu)",
        "libdet op box_iou_rotated: using the pure-PyTorch twin (no compiled kernel for mps tensors)",
    ]


def _broken_copy(tmp_path: Path, broken: str) -> Path:
    root = tmp_path / "csrc"
    shutil.copytree(CSRC, root)
    for source in (root / broken).glob("*.c[pu]*"):
        source.unlink()
    # Fails at once: the missing header stops the compiler before it parses torch's headers.
    (root / broken / f"{broken}.cpp").write_text('#include "libdet_missing_header_for_test.h"\n')
    return root


def test_broken_op_fails_alone(no_disable_env, tmp_path, caplog):
    _require_default_build("box_iou_rotated")
    loader = _ops._OpLoader(csrc_dirs=[_broken_copy(tmp_path, "nms_rotated")])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not loader.load_op("nms_rotated")
        assert not loader.load_op("nms_rotated")
        # The untouched op has the same sources, so it loads from the cache without compiling.
        assert loader.load_op("box_iou_rotated")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert "nms_rotated" in warnings[0] and "libdet_missing_header_for_test.h" in warnings[0]
    assert not any("compiling" in r.getMessage() and "box_iou_rotated" in r.getMessage() for r in caplog.records)
    status = loader.ops_status()
    assert (
        status["nms_rotated"].startswith("unavailable: ")
        and "libdet_missing_header_for_test.h" in status["nms_rotated"]
    )
    assert status["box_iou_rotated"].startswith("compiled")


def test_missing_sources(no_disable_env, tmp_path, caplog):
    loader = _ops._OpLoader(csrc_dirs=[tmp_path / "nowhere"], cache_root=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not loader.load_op("roi_align_rotated")
    assert loader.ops_status()["roi_align_rotated"].startswith("unavailable: sources not found")
    assert "roi_align_rotated is unavailable" in caplog.text


def test_missing_compiler(no_disable_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "libdet-no-such-compiler")
    loader = _ops._OpLoader(cache_root=tmp_path / "cache")  # empty cache: it would have to compile
    assert not loader.load_op("box_iou_rotated")
    assert "no C++ compiler found" in loader.ops_status()["box_iou_rotated"]
    assert not loader.use_kernel("box_iou_rotated", "cpu")


def test_cache_location_and_source_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_OPS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "csrc"
    shutil.copytree(CSRC, root)
    loader = _ops._OpLoader(csrc_dirs=[root])
    before = loader._build_dir("nms_rotated", root, False, ["-O3"], [])
    assert before.parent == tmp_path / "cache" / f"{torch.__version__}-cpu"
    assert before.name.startswith("nms_rotated-")
    (root / "common" / "rotated_box_geometry.h").write_text("// edited\n", encoding="utf-8")
    assert loader._build_dir("nms_rotated", root, False, ["-O3"], []) != before


def test_main_prints_status_table(capsys):
    code = _ops.main([])
    out = capsys.readouterr().out
    status = _ops.ops_status()
    for name in _ops.OP_NAMES:
        assert f"{name}" in out and status[name] in out
    assert code == (1 if any(s.startswith("unavailable") for s in status.values()) else 0)


def test_module_entry_point():
    result = _run_python("-m", "libdet.layers._ops", LIBDET_DISABLE_OPS="1")
    assert result.returncode == 0, result.stderr
    assert "disabled by LIBDET_DISABLE_OPS" in result.stdout
    assert "RuntimeWarning" not in result.stderr
