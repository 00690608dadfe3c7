"""Compiled ops (libdet/utils/compiled_ops.py): declaration, lazy build and cache, kernel-or-twin choice."""

import dataclasses
import importlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libdet.evaluation import fast_eval_api
from libdet.utils import compiled_ops

# The modules, not the functions of the same names that libdet.layers exports.
nms = importlib.import_module("libdet.layers.nms")
roi_align = importlib.import_module("libdet.layers.roi_align")
roi_align_rotated = importlib.import_module("libdet.layers.roi_align_rotated")
rotated_boxes = importlib.import_module("libdet.layers.rotated_boxes")

REPO_ROOT = Path(__file__).resolve().parents[2]
CSRC = REPO_ROOT / "csrc"
LOGGER = "libdet.utils.compiled_ops"
CORE_NAMES = ("box_iou_rotated", "nms_rotated", "roi_align", "roi_align_rotated", "coco_eval")
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None


@pytest.fixture
def no_disable_env(monkeypatch):
    monkeypatch.delenv("LIBDET_DISABLE_OPS", raising=False)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Ops registered in the test are forgotten afterwards."""
    monkeypatch.setattr(compiled_ops, "_REGISTRY", dict(compiled_ops._REGISTRY))


def _require_default_build(name: str) -> None:
    if not compiled_ops.load_op(name):
        pytest.skip(f"compiled {name} unavailable: {compiled_ops.ops_status()[name]}")


def _run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=300)


def test_core_ops_are_registered_by_their_modules():
    ops = compiled_ops.register_core_ops()
    assert {op.name: op for op in ops} == {
        "box_iou_rotated": rotated_boxes.BOX_IOU_ROTATED_OP,
        "nms_rotated": nms.NMS_ROTATED_OP,
        "roi_align": roi_align.ROI_ALIGN_OP,
        "roi_align_rotated": roi_align_rotated.ROI_ALIGN_ROTATED_OP,
        "coco_eval": fast_eval_api.COCO_EVAL_OP,
    }
    assert compiled_ops.get_op("nms_rotated") is nms.NMS_ROTATED_OP
    with pytest.raises(ValueError, match="Unknown libdet op 'nms'"):
        compiled_ops.load_op("nms")


def test_register_rejects_a_second_folder_under_a_name(scratch_registry, tmp_path):
    with pytest.raises(ValueError, match="already registered"):
        compiled_ops.register_op("nms_rotated", sources=tmp_path, schemas={"nms_rotated": "nms_rotated() -> ()"})
    with pytest.raises(ValueError, match="at least one operator"):
        compiled_ops.register_op("empty", sources=tmp_path, schemas={})


def test_import_compiles_and_loads_nothing():
    result = _run_python(
        "-c",
        "import torch, libdet.layers, libdet.evaluation\n"
        "from libdet.utils import compiled_ops\n"
        "status = compiled_ops.ops_status()\n"
        "assert list(status) == ['box_iou_rotated', 'nms_rotated', 'roi_align', 'roi_align_rotated', "
        "'coco_eval'], status\n"
        "assert set(status.values()) == {'not loaded yet'}, status\n"
        "assert not hasattr(torch.ops.libdet, 'box_iou_rotated')\n"
        "print('lazy')\n",
        LIBDET_DISABLE_OPS="",
    )
    assert result.returncode == 0, result.stderr
    assert "lazy" in result.stdout


def test_disable_all_forces_twins(monkeypatch, caplog):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "1")
    loader = compiled_ops.OpLoader()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not any(loader.load(name) for name in CORE_NAMES)
        assert not loader.use_kernel("box_iou_rotated", "cpu")
        assert not loader.use_kernel("box_iou_rotated", torch.device("cpu"))  # logged once only
    assert {name: loader.status(name) for name in CORE_NAMES} == dict.fromkeys(
        CORE_NAMES, "disabled by LIBDET_DISABLE_OPS"
    )
    assert loader._results == {}  # nothing was built
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == ["libdet op box_iou_rotated: using the pure-PyTorch twin (disabled by LIBDET_DISABLE_OPS)"]


def test_disable_list(monkeypatch, caplog):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "nms_rotated, roi_align_rotated, no_such_op")
    loader = compiled_ops.OpLoader()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not loader.load("nms_rotated")
    assert "unknown op(s) ['no_such_op']" in caplog.text
    assert {name: loader.status(name) for name in CORE_NAMES} == {
        "box_iou_rotated": "not loaded yet",
        "nms_rotated": "disabled by LIBDET_DISABLE_OPS",
        "roi_align": "not loaded yet",
        "roi_align_rotated": "disabled by LIBDET_DISABLE_OPS",
        "coco_eval": "not loaded yet",
    }


def test_disable_env_routes_every_wrapper_to_its_twin(monkeypatch):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "1")
    calls = []

    def spy(module, attribute):
        op = getattr(module, attribute)

        def twin(*args, **kwargs):
            calls.append(op.name)
            return op.twin(*args, **kwargs)

        monkeypatch.setattr(module, attribute, dataclasses.replace(op, twin=twin))

    spy(rotated_boxes, "BOX_IOU_ROTATED_OP")
    spy(nms, "NMS_ROTATED_OP")
    spy(roi_align_rotated, "ROI_ALIGN_ROTATED_OP")
    boxes = torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0], [5.0, 5.5, 4.0, 2.0, 30.0]])
    iou = rotated_boxes.box_iou_rotated(boxes, boxes)
    assert torch.equal(iou, rotated_boxes._box_iou_rotated_twin(boxes, boxes).float())
    assert nms.nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
    roi_align_rotated.roi_align_rotated(torch.rand(1, 2, 8, 8), torch.tensor([[0.0, 4, 4, 3, 3, 10]]), 2, 1.0, 0)
    assert calls == ["box_iou_rotated", "nms_rotated", "roi_align_rotated"]


def test_status_and_log_after_loading(no_disable_env, caplog):
    _require_default_build("box_iou_rotated")
    assert compiled_ops.ops_status()["box_iou_rotated"] in ("compiled (cpu)", "compiled (cpu+cuda)")
    loader = compiled_ops.OpLoader()  # fresh state; finds the build in the cache
    assert loader.status("box_iou_rotated") == "not loaded yet"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert loader.use_kernel("box_iou_rotated", "cpu")
        assert loader.use_kernel("box_iou_rotated", "cpu")
        assert not loader.use_kernel("box_iou_rotated", "mps")
    assert loader.status("box_iou_rotated") == compiled_ops.ops_status()["box_iou_rotated"]
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == [
        "libdet op box_iou_rotated: using compiled kernel (cpu)",
        "libdet op box_iou_rotated: using the pure-PyTorch twin (no compiled kernel for mps tensors)",
    ]


def _copy_of(op: compiled_ops.CompiledOp, root: Path) -> compiled_ops.CompiledOp:
    """``op`` built from a copy of csrc/ at ``root`` (not registered)."""
    return dataclasses.replace(
        op, sources=root / op.sources.name, include_dirs=tuple(root / d.name for d in op.include_dirs)
    )


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
    root = _broken_copy(tmp_path, "nms_rotated")
    broken, intact = _copy_of(nms.NMS_ROTATED_OP, root), _copy_of(rotated_boxes.BOX_IOU_ROTATED_OP, root)
    loader = compiled_ops.OpLoader()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not loader.load(broken)
        assert not loader.load(broken)
        # The untouched op has the same sources, so it loads from the cache without compiling.
        assert loader.load(intact)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert "nms_rotated" in warnings[0] and "libdet_missing_header_for_test.h" in warnings[0]
    assert not any("compiling" in r.getMessage() and "box_iou_rotated" in r.getMessage() for r in caplog.records)
    assert loader.status(broken).startswith("unavailable: ")
    assert "libdet_missing_header_for_test.h" in loader.status(broken)
    assert loader.status(intact).startswith("compiled")


def test_missing_sources(no_disable_env, tmp_path, caplog):
    op = _copy_of(roi_align_rotated.ROI_ALIGN_ROTATED_OP, tmp_path / "nowhere")
    loader = compiled_ops.OpLoader(cache_root=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not loader.load(op)
    assert loader.status(op).startswith("unavailable: sources not found")
    assert "roi_align_rotated is unavailable" in caplog.text


def test_missing_compiler(no_disable_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "libdet-no-such-compiler")
    loader = compiled_ops.OpLoader(cache_root=tmp_path / "cache")  # empty cache: it would have to compile
    assert not loader.load("box_iou_rotated")
    assert "no C++ compiler found" in loader.status("box_iou_rotated")
    assert not loader.use_kernel("box_iou_rotated", "cpu")


def test_cache_location_and_source_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_OPS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "csrc"
    shutil.copytree(CSRC, root)
    op = _copy_of(nms.NMS_ROTATED_OP, root)
    loader = compiled_ops.OpLoader()
    before = loader.build_dir(op, False, ["-O3"], [])
    assert before.parent == tmp_path / "cache" / f"{torch.__version__}-cpu"
    assert before.name.startswith("nms_rotated-")
    # The hash names files relative to their folder's parent, so a copy of the tree hashes the same.
    assert before.name == loader.build_dir(nms.NMS_ROTATED_OP, False, ["-O3"], []).name
    (root / "common" / "rotated_box_geometry.h").write_text("// edited\n", encoding="utf-8")
    assert loader.build_dir(op, False, ["-O3"], []) != before


def test_main_prints_status_table(capsys):
    code = compiled_ops.main([])
    out = capsys.readouterr().out
    status = compiled_ops.ops_status()
    for name in CORE_NAMES:
        assert name in out and status[name] in out
    assert code == (1 if any(s.startswith("unavailable") for s in status.values()) else 0)


def test_module_entry_point():
    result = _run_python("-m", "libdet.utils.compiled_ops", LIBDET_DISABLE_OPS="1")
    assert result.returncode == 0, result.stderr
    for name in CORE_NAMES:
        assert f"{name}  " in result.stdout
    assert "disabled by LIBDET_DISABLE_OPS" in result.stdout
    assert "RuntimeWarning" not in result.stderr


# A toy op, as a project would add one: one folder of sources and one register_op call.
_TOY_SOURCE = r"""
#include <ATen/ATen.h>
#include <torch/library.h>

namespace {
at::Tensor toy_affine_cpu(const at::Tensor& x, double scale) { return x * scale + 1; }
}  // namespace

TORCH_LIBRARY(libdet_test_toy, m) { m.def("toy_affine(Tensor x, float scale) -> Tensor"); }

TORCH_LIBRARY_IMPL(libdet_test_toy, CPU, m) { m.impl("toy_affine", &toy_affine_cpu); }
"""


def _toy_twin(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x * scale + 1


def _toy_fake(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)


def _register_toy(folder: Path) -> compiled_ops.CompiledOp:
    folder.mkdir(parents=True)
    (folder / "toy_affine.cpp").write_text(_TOY_SOURCE, encoding="utf-8")
    return compiled_ops.register_op(
        "toy_affine",
        sources=folder,
        schemas={"toy_affine": "toy_affine(Tensor x, float scale) -> Tensor"},
        fakes={"toy_affine": _toy_fake},
        twin=_toy_twin,
        cuda=False,
        namespace="libdet_test_toy",
    )


def test_toy_op_twin_serves_when_disabled_or_unbuildable(scratch_registry, tmp_path, monkeypatch):
    toy = _register_toy(tmp_path / "toy_affine")
    x = torch.arange(6.0).reshape(2, 3)
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "toy_affine")
    assert not toy.use_kernel("cpu")
    assert torch.equal(toy(x, 2.0), x * 2 + 1)
    assert compiled_ops.ops_status()["toy_affine"] == "disabled by LIBDET_DISABLE_OPS"
    monkeypatch.delenv("LIBDET_DISABLE_OPS")
    monkeypatch.setenv("CXX", "libdet-no-such-compiler")
    loader = compiled_ops.OpLoader(cache_root=tmp_path / "cache")
    assert not loader.use_kernel(toy, "cpu")
    assert "no C++ compiler found" in loader.status(toy)
    assert not hasattr(torch.ops.libdet_test_toy, "toy_affine")


@pytest.mark.skipif(not HAS_COMPILER, reason="needs a C++ compiler")
def test_toy_op_registered_from_a_temporary_folder(scratch_registry, no_disable_env, tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_OPS_CACHE", str(tmp_path / "cache"))
    toy = _register_toy(tmp_path / "toy_affine")
    assert compiled_ops.ops_status()["toy_affine"] == "not loaded yet"
    x = torch.arange(6.0).reshape(2, 3)
    assert toy.use_kernel("cpu"), compiled_ops.ops_status()["toy_affine"]
    assert compiled_ops.ops_status()["toy_affine"] == "compiled (cpu-only op)"
    assert not toy.use_kernel("cuda")  # declared CPU-only
    assert torch.equal(toy(x, 2.0), _toy_twin(x, 2.0))
    assert torch.equal(toy.ops.toy_affine(x, -0.5), _toy_twin(x, -0.5))
    assert list((tmp_path / "cache" / f"{torch.__version__}-cpu").glob("libdet_test_toy.toy_affine-*/BUILD_OK"))
    # The fake kernel gives shapes to meta tensors (and to torch.compile / export tracing).
    assert toy.ops.toy_affine(torch.empty(4, 5, device="meta"), 3.0).shape == (4, 5)


@pytest.mark.skipif(not HAS_COMPILER, reason="needs a C++ compiler")
def test_schema_mismatch_is_reported(scratch_registry, no_disable_env, tmp_path, monkeypatch):
    _require_default_build("box_iou_rotated")
    wrong = dataclasses.replace(
        rotated_boxes.BOX_IOU_ROTATED_OP, schemas={"box_iou_rotated": "box_iou_rotated(Tensor a) -> Tensor"}
    )
    loader = compiled_ops.OpLoader()
    assert not loader.load(wrong)
    assert "where libdet::box_iou_rotated(Tensor a) -> Tensor was declared" in loader.status(wrong)


def test_core_fake_kernels_give_shapes(no_disable_env):
    """The fake kernels registered with each core op let meta tensors (and torch.compile/export) trace it."""
    for name in ("box_iou_rotated", "nms_rotated", "roi_align_rotated"):
        _require_default_build(name)
    ops = torch.ops.libdet
    boxes = torch.empty(7, 5, device="meta")
    assert ops.box_iou_rotated(boxes, torch.empty(3, 5, device="meta")).shape == (7, 3)
    features, rois = torch.empty(2, 4, 16, 16, device="meta"), torch.empty(5, 6, device="meta")
    assert ops.roi_align_rotated_forward(features, rois, 0.5, 3, 2, 0).shape == (5, 4, 3, 2)
    grad = torch.empty(5, 4, 3, 2, device="meta")
    assert ops.roi_align_rotated_backward(grad, rois, 0.5, 3, 2, 2, 4, 16, 16, 0).shape == (2, 4, 16, 16)

    class RotatedIoU(torch.nn.Module):
        def forward(self, a, b):
            return rotated_boxes.box_iou_rotated(a, b)

    a = torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0], [6.0, 5.0, 3.0, 2.0, 0.0]])
    program = torch.export.export(RotatedIoU(), (a, a[:1]))
    assert "libdet.box_iou_rotated" in str(program.graph)
    torch.testing.assert_close(program.module()(a, a[:1]), rotated_boxes.box_iou_rotated(a, a[:1]))


def test_fullgraph_compile_on_the_first_call_of_an_op():
    """torch.compile(fullgraph=True) works even when the op's first call is inside the compiled function: the
    kernel choice (which may build the op) runs eagerly during tracing."""
    code = (
        "import torch\n"
        "from libdet.layers.rotated_boxes import pairwise_iou_rotated\n"
        "a = torch.tensor([[10., 10, 8, 6, 30], [20, 20, 5, 5, 0]]); b = torch.tensor([[11., 10, 8, 6, 25]])\n"
        "f = torch.compile(lambda x, y: pairwise_iou_rotated(x, y) * 2, fullgraph=True, backend='eager')\n"
        "out = f(a, b)\n"
        "assert torch.allclose(out, pairwise_iou_rotated(a, b) * 2), out\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LIBDET_DISABLE_OPS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
