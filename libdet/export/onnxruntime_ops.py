"""libdet's onnxruntime custom ops (``csrc/onnxruntime``): build, register, and write them into ONNX files.

``export_model(..., format="onnx", onnx_custom_ops=True)`` writes RoIAlign as ``libdet.RoiAlign`` (a
channels-last map in, the standard ``RoiAlign``'s output out) instead of ONNX's ``RoiAlign``: onnxruntime's
kernel interpolates one channel plane at a time in scalar code, libdet's adds contiguous channel vectors
(4-6x faster on Mask R-CNN's box head, the same results bit for bit as torchvision). Such a file runs only
in onnxruntime with this library registered; :func:`libdet.export.load_exported` registers it.

The library is plain C++ against onnxruntime's C/C++ API headers (``onnxruntime_cxx_api.h``), which the
onnxruntime wheel does not carry (``docs/deployment.md`` lists where to get them). It is compiled on first
use with the system's C++ compiler and cached next to libdet's compiled ops.

Environment:
    LIBDET_ONNXRUNTIME_OPS: a built library to use as is (nothing is compiled).
    ONNXRUNTIME_INCLUDE_DIR, ONNXRUNTIME_ROOT: where the headers are (``ONNXRUNTIME_ROOT/include``); else
        ``/usr/include/onnxruntime`` and ``/usr/local/include/onnxruntime`` are tried.
    CXX: the compiler (default ``c++``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from libdet.utils.compiled_ops import _default_cache_root, _file_lock, libdet_csrc

__all__ = [
    "ONNX_DOMAIN",
    "onnxruntime_headers",
    "onnxruntime_ops_library",
    "register_onnxruntime_ops",
    "onnx_custom_translations",
]

logger = logging.getLogger(__name__)

#: The ONNX domain of libdet's ops.
ONNX_DOMAIN = "libdet"
_LIBRARY_ENV = "LIBDET_ONNXRUNTIME_OPS"
_HEADER = "onnxruntime_cxx_api.h"
_LIBRARY_NAME = "libdet_onnxruntime_ops.so"
# The kernel's sources: the library's own file and the headers of libdet's roi_align kernel it includes.
_SOURCE_FOLDERS = ("onnxruntime", "roi_align", "common")


def onnxruntime_headers() -> Path | None:
    """The folder holding onnxruntime's C/C++ API headers, or None when none is found (see the module
    docstring for where it looks)."""
    candidates: list[Path] = []
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        candidates.append(Path(os.environ["ONNXRUNTIME_INCLUDE_DIR"]))
    if os.environ.get("ONNXRUNTIME_ROOT"):
        root = Path(os.environ["ONNXRUNTIME_ROOT"])
        candidates += [root / "include", root / "include" / "onnxruntime"]
    candidates += [Path("/usr/include/onnxruntime"), Path("/usr/local/include/onnxruntime")]
    return next((folder for folder in candidates if (folder / _HEADER).is_file()), None)


def _build_flags(headers: Path) -> list[str]:
    include = [f"-I{headers}", *(f"-I{libdet_csrc(name)}" for name in _SOURCE_FOLDERS[1:])]
    # -O3 as libdet's torch ops, so that both kernels compile (and round) alike.
    return ["-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", *include]


def _source_hash(headers: Path, flags: list[str]) -> str:
    digest = hashlib.sha256()
    for folder in _SOURCE_FOLDERS:
        for source in sorted(libdet_csrc(folder).glob("*")):
            if source.suffix in (".h", ".cc", ".cpp"):
                digest.update(source.name.encode())
                digest.update(source.read_bytes())
    digest.update((headers / "onnxruntime_c_api.h").read_bytes())  # the API version the library is built for
    digest.update(" ".join(flags).encode())
    return digest.hexdigest()[:16]


def onnxruntime_ops_library() -> Path:
    """The built library: ``$LIBDET_ONNXRUNTIME_OPS`` if set, else compiled once per source version (cached).

    Raises:
        RuntimeError: when it cannot be built (no onnxruntime headers, no compiler, a compile error); the
            message says what is missing.
    """
    if os.environ.get(_LIBRARY_ENV):
        library = Path(os.environ[_LIBRARY_ENV])
        if not library.is_file():
            raise RuntimeError(f"{_LIBRARY_ENV}={library}: no such file.")
        return library
    if os.name == "nt":
        raise RuntimeError(
            f"libdet's onnxruntime ops are built with gcc/clang flags, not on Windows; set {_LIBRARY_ENV} to a "
            "library built from csrc/onnxruntime by hand."
        )
    headers = onnxruntime_headers()
    if headers is None:
        raise RuntimeError(
            f"libdet's onnxruntime ops need onnxruntime's C/C++ headers ({_HEADER}), which the onnxruntime wheel "
            "does not carry: set ONNXRUNTIME_ROOT (or ONNXRUNTIME_INCLUDE_DIR) to an onnxruntime release or "
            f"install libonnxruntime-dev (docs/deployment.md), or set {_LIBRARY_ENV} to a built library."
        )
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"libdet's onnxruntime ops: no C++ compiler ({cxx!r} is not on PATH; set CXX).")
    flags = _build_flags(headers)
    build_dir = _default_cache_root() / f"onnxruntime_ops-{_source_hash(headers, flags)}"
    library = build_dir / _LIBRARY_NAME
    with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
        if not library.is_file():
            build_dir.mkdir(parents=True, exist_ok=True)
            partial = build_dir / f".{_LIBRARY_NAME}.{os.getpid()}"
            source = libdet_csrc("onnxruntime") / "libdet_onnxruntime_ops.cc"
            logger.info("libdet onnxruntime ops: compiling %s in %s", source, build_dir)
            result = subprocess.run(
                [cxx, *flags, str(source), "-o", str(partial)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                partial.unlink(missing_ok=True)
                first_errors = result.stderr[:4000]  # the first error explains the others
                raise RuntimeError(f"libdet's onnxruntime ops failed to compile ({cxx}):\n{first_errors}")
            os.replace(partial, library)  # whole or absent: a crash mid-build leaves no broken library
    return library


def register_onnxruntime_ops(session_options: Any, library: str | os.PathLike | None = None) -> Path:
    """Register libdet's ops with an ``onnxruntime.SessionOptions`` (the library from
    :func:`onnxruntime_ops_library` unless ``library`` is given); returns the library's path."""
    path = Path(library) if library is not None else onnxruntime_ops_library()
    session_options.register_custom_ops_library(str(path))
    return path


def _roi_align_schema():
    """``libdet.RoiAlign``'s ONNX schema (what ``csrc/onnxruntime`` implements). It is given to onnxscript with
    the op, not registered with onnx: a second schema named ``RoiAlign`` (of another domain) in onnx's global
    registry breaks ``onnx.reference``, which assumes op names unique across domains."""
    import onnx

    schema = onnx.defs.OpSchema
    param = schema.FormalParameter
    attr = schema.Attribute
    return schema(
        "RoiAlign",
        ONNX_DOMAIN,
        1,
        "RoIAlign (torchvision's roi_align) on a channels-last map X [N, H, W, C]; rois [R, 4] (x0, y0, x1, y1) "
        "in image coordinates, batch_indices [R]; Y [R, C, output_height, output_width].",
        inputs=[param("X", "T"), param("rois", "T"), param("batch_indices", "tensor(int64)")],
        outputs=[param("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float32 only")],
        attributes=[
            attr("output_height", schema.AttrType.INT, "pooled height"),
            attr("output_width", schema.AttrType.INT, "pooled width"),
            attr("sampling_ratio", schema.AttrType.INT, "samples per bin side; <= 0: adaptive"),
            attr("aligned", schema.AttrType.INT, "1: half-pixel offset (torchvision's aligned=True)"),
            attr("spatial_scale", schema.AttrType.FLOAT, "image to map coordinates"),
        ],
    )


def _roi_align_channels_last(
    input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int = -1, aligned=False
):
    """ONNX translation of ``torchvision::roi_align``: a ``Transpose`` to channels last (onnxruntime merges
    the identical ones of a map pooled by several heads) and ``libdet.RoiAlign``."""
    from onnxscript import INT64
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset

    libdet_roi_align = Op(Opset(ONNX_DOMAIN, 1), "RoiAlign", _roi_align_schema())
    batch_indices = op.Cast(op.Squeeze(op.Slice(rois, [0], [1], [1]), [1]), to=INT64.dtype)
    boxes = op.Slice(rois, [1], [5], [1])
    channels_last = op.Transpose(input, perm=[0, 2, 3, 1])
    return libdet_roi_align(
        channels_last,
        boxes,
        batch_indices,
        output_height=pooled_height,
        output_width=pooled_width,
        sampling_ratio=sampling_ratio,  # <= 0: adaptive, as torchvision
        aligned=int(bool(aligned)),
        spatial_scale=float(spatial_scale),
    )


def onnx_custom_translations() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export`` that writes libdet's ops."""
    import torch
    import torchvision  # noqa: F401  (registers torch.ops.torchvision.roi_align)

    return {torch.ops.torchvision.roi_align.default: _roi_align_channels_last}
