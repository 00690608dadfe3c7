"""tools/deploy/onnx_cpp: the C++ onnxruntime example is configured and built with CMake, run on an image, and
its detections compared with onnxruntime's Python API (what tools/deploy/run_onnx.py runs) on the same input.

Skipped without cmake, a C++ compiler, or the onnxruntime C/C++ headers and library (``ONNXRUNTIME_ROOT``, see
the "C++ example" section of docs/deployment.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.export import _models

ONNX_CPP = Path(__file__).resolve().parents[2] / "tools" / "deploy" / "onnx_cpp"
GREEN = (0, 255, 0)  # the colour main.cpp draws boxes with

pytestmark = pytest.mark.slow  # the ONNX export of the tiny Mask R-CNN alone takes 15-40 s


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The built ``libdet_onnx_demo``; skips (before the slow export) when it cannot be built here."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("building tools/deploy/onnx_cpp needs cmake on PATH")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        pytest.skip("building tools/deploy/onnx_cpp needs a C++ compiler (c++, g++ or clang++; or set CXX)")
    build = tmp_path_factory.mktemp("onnx_cpp_build")
    # CMakeLists.txt reads ONNXRUNTIME_ROOT from the environment.
    configure = subprocess.run([cmake, "-S", str(ONNX_CPP), "-B", str(build)], capture_output=True, text=True)
    log = configure.stdout + configure.stderr
    if configure.returncode != 0 and "onnxruntime not found" in log:
        where = os.environ.get("ONNXRUNTIME_ROOT") or "unset"
        pytest.skip(
            f"onnxruntime C/C++ headers and library not found (ONNXRUNTIME_ROOT={where}): set ONNXRUNTIME_ROOT "
            "to an onnxruntime release or package prefix, see docs/deployment.md ('C++ example')"
        )
    if configure.returncode != 0 and "CMAKE_CXX_COMPILER" in log:
        pytest.skip(f"cmake finds no C++ compiler:\n{log[-1000:]}")
    assert configure.returncode == 0, f"cmake configure failed:\n{log[-4000:]}"
    built = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True)
    assert built.returncode == 0, f"cmake --build failed:\n{(built.stdout + built.stderr)[-4000:]}"
    return build / "libdet_onnx_demo"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny calibrated Mask R-CNN (detections exist) exported to ONNX, loaded in Python onnxruntime."""
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'libdet[export]')")
    pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime (pip install 'libdet[export]')")
    from libdet.export import export_model

    sample, _ = _models.images("mask_rcnn_fpn")
    return export_model(_models.build("mask_rcnn_fpn"), sample, "onnx", tmp_path_factory.mktemp("onnx_cpp_model"))


@pytest.fixture(scope="module")
def exported_custom_ops(tmp_path_factory):
    """The same model exported with libdet's onnxruntime ops, and their library (skips when it cannot be built)."""
    from libdet.export import export_model, onnxruntime_ops_library

    try:
        library = onnxruntime_ops_library()
    except RuntimeError as e:
        pytest.skip(f"libdet's onnxruntime ops cannot be built here: {str(e).splitlines()[0]}")
    sample, _ = _models.images("mask_rcnn_fpn")
    out = tmp_path_factory.mktemp("onnx_cpp_custom_ops")
    return export_model(_models.build("mask_rcnn_fpn"), sample, "onnx", out, onnx_custom_ops=True), library


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A random 96 x 128 RGB image saved as a binary PPM (another size than the export sample's)."""
    path = tmp_path_factory.mktemp("onnx_cpp_image") / "image.ppm"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)).save(path)
    return path


def _run_demo(demo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = None if env is None else {**os.environ, **env}
    return subprocess.run([str(demo), *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


def _parse(stdout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``classes (n,)``, ``scores (n,)``, ``boxes (n, 4)`` float32 from the demo's lines, and its last line."""
    rows = [line.split() for line in stdout.splitlines() if line.startswith("class ")]
    assert all(len(r) == 9 and (r[0], r[2], r[4]) == ("class", "score", "box") for r in rows), stdout
    classes = np.array([int(r[1]) for r in rows], dtype=np.int64)
    scores = np.array([r[3] for r in rows], dtype=np.float32)
    boxes = np.array([r[5:9] for r in rows], dtype=np.float32).reshape(-1, 4)
    return classes, scores, boxes, stdout.splitlines()[-1].split()


def _python_outputs(exported, image: Path, channels: str) -> dict[str, np.ndarray]:
    """The outputs of Python onnxruntime on the image prepared as run_onnx.py prepares it (its resize is the
    identity here: the image is given at the model's input size)."""
    pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)
    if channels == "BGR":
        pixels = pixels[:, :, ::-1]
    images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return {k: v.numpy() for k, v in exported(images).items()}


@pytest.mark.parametrize("channels", ["BGR", "RGB"])
def test_cpp_demo_matches_python_onnxruntime(demo, exported, image, tmp_path, channels):
    out = tmp_path / "out.ppm"
    proc = _run_demo(demo, exported.path, image, out, "0", channels)
    assert proc.returncode == 0, proc.stderr
    classes, scores, boxes, summary = _parse(proc.stdout)
    expected = _python_outputs(exported, image, channels)
    assert len(expected["scores"]) > 0  # the calibrated tiny model detects something on noise
    assert summary[:4] == [str(len(expected["scores"])), "detections,", str(len(scores)), "with"]
    np.testing.assert_array_equal(classes, expected["classes"])
    np.testing.assert_allclose(scores, expected["scores"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(boxes, expected["boxes"], rtol=1e-5, atol=1e-4)

    drawn, original = np.asarray(Image.open(out)), np.asarray(Image.open(image))
    assert drawn.shape == original.shape
    x0, y0 = (int(np.clip(v, 0, n - 1)) for v, n in zip(boxes[0, :2], (original.shape[1], original.shape[0])))
    assert tuple(drawn[y0, x0]) == GREEN  # the top-left corner of the best box


def test_cpp_demo_runs_libdet_custom_ops(demo, exported_custom_ops, image, tmp_path):
    exported, library = exported_custom_ops
    without = _run_demo(demo, exported.path, image, tmp_path / "out.ppm")
    assert without.returncode == 1 and "RoiAlign" in without.stderr  # the op is unknown without the library
    env = {"LIBDET_ONNXRUNTIME_OPS": str(library)}
    proc = _run_demo(demo, exported.path, image, tmp_path / "out.ppm", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    classes, scores, boxes, _ = _parse(proc.stdout)
    expected = _python_outputs(exported, image, "BGR")
    assert len(expected["scores"]) > 0
    np.testing.assert_array_equal(classes, expected["classes"])
    np.testing.assert_allclose(scores, expected["scores"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(boxes, expected["boxes"], rtol=1e-5, atol=1e-4)


def test_cpp_demo_score_threshold(demo, exported, image, tmp_path):
    scores = np.sort(_python_outputs(exported, image, "BGR")["scores"])[::-1]
    assert len(scores) >= 2 and scores[0] > scores[-1], scores
    k = len(scores) // 2
    while scores[k] == scores[k - 1]:  # a threshold strictly between two distinct scores
        k -= 1
    threshold = float(scores[k - 1] + scores[k]) / 2
    proc = _run_demo(demo, exported.path, image, tmp_path / "out.ppm", repr(threshold))
    assert proc.returncode == 0, proc.stderr
    _, kept, _, summary = _parse(proc.stdout)
    assert len(kept) == k and (kept >= threshold).all()
    assert summary[:3] == [str(len(scores)), "detections,", str(k)]


def test_cpp_demo_errors(demo, exported, image, tmp_path):
    usage = _run_demo(demo, exported.path)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    threshold = _run_demo(demo, exported.path, image, tmp_path / "out.ppm", "0.5x")
    assert threshold.returncode == 1 and "score_threshold must be a number, got 0.5x" in threshold.stderr
    channels = _run_demo(demo, exported.path, image, tmp_path / "out.ppm", "0.5", "bgr")
    assert channels.returncode == 1 and "BGR or RGB" in channels.stderr
    png = tmp_path / "image.png"
    Image.open(image).save(png)
    not_ppm = _run_demo(demo, exported.path, png, tmp_path / "out.ppm")
    assert not_ppm.returncode == 1 and "image.png: expected a binary 8-bit PPM" in not_ppm.stderr
    missing = _run_demo(demo, tmp_path / "no_such.onnx", image, tmp_path / "out.ppm")
    assert missing.returncode == 1 and "no_such.onnx" in missing.stderr
