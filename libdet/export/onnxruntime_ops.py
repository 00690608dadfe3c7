"""libdet's onnxruntime custom ops (``csrc/onnxruntime``): build, register, and write them into ONNX files.

``export_model(..., format="onnx", onnx_custom_ops=True)`` (and ``quantize_onnx(..., onnx_custom_ops=True)``;
any ONNX file through :func:`use_libdet_roi_align`) writes RoIAlign as ``libdet.RoiAlign`` (a channels-last map
in, the standard ``RoiAlign``'s output out) instead of ONNX's ``RoiAlign``: onnxruntime's
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
    "use_libdet_roi_align",
    "use_libdet_roi_align_in_file",
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


def _attributes(node) -> dict[str, Any]:
    import onnx

    return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}


def _element_types(graph) -> dict[str, int]:
    """Known element types of the graph's values (inputs, outputs, value_info, initializers)."""
    types = {init.name: init.data_type for init in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def use_libdet_roi_align(model) -> int:
    """Rewrite an ONNX model (``onnx.ModelProto``, in place) to run its RoIAlign with libdet's op: every
    standard ``RoiAlign`` (``mode="avg"``, float32) becomes a ``Transpose`` to channels last and a
    ``libdet.RoiAlign`` with the same semantics (onnxruntime folds the ``Transpose`` into the layout conversion
    after the convolution that feeds it). Works on any ONNX file, e.g. an int8 (QDQ) model quantized from a
    standard export.

    Returns:
        the number of replaced nodes (0: the model is unchanged and needs no library).
    """
    import onnx

    float32 = onnx.TensorProto.FLOAT
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    types = _element_types(model.graph)
    nodes = []
    replaced = 0
    for node in model.graph.node:
        attrs = _attributes(node)
        if (
            node.op_type != "RoiAlign"
            or node.domain not in ("", "ai.onnx")
            or attrs.get("mode", b"avg") != b"avg"
            or types.get(node.input[0], float32) != float32
        ):
            nodes.append(node)
            continue
        # Before opset 16 RoiAlign had no coordinate_transformation_mode and behaved as "output_half_pixel".
        default_mode = b"half_pixel" if default_opset >= 16 else b"output_half_pixel"
        channels_last = f"{node.output[0]}_libdet_channels_last"
        nodes.append(
            onnx.helper.make_node(
                "Transpose", [node.input[0]], [channels_last], name=f"{node.name}_to_channels_last", perm=[0, 2, 3, 1]
            )
        )
        nodes.append(
            onnx.helper.make_node(
                "RoiAlign",
                [channels_last, node.input[1], node.input[2]],
                list(node.output),
                name=node.name,
                domain=ONNX_DOMAIN,
                output_height=int(attrs.get("output_height", 1)),
                output_width=int(attrs.get("output_width", 1)),
                sampling_ratio=int(attrs.get("sampling_ratio", 0)),
                aligned=int(attrs.get("coordinate_transformation_mode", default_mode) == b"half_pixel"),
                spatial_scale=float(attrs.get("spatial_scale", 1.0)),
            )
        )
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        if not any(o.domain == ONNX_DOMAIN for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(ONNX_DOMAIN, 1))
    return replaced


def use_libdet_roi_align_in_file(path: str | os.PathLike) -> int:
    """:func:`use_libdet_roi_align` on an ONNX file, rewritten in place (atomically; external weights, if any,
    stay where they are). Returns the number of replaced nodes."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    replaced = use_libdet_roi_align(model)
    if replaced:
        partial = path.with_name(f".{path.name}.libdet_ops")
        try:
            onnx.save(model, str(partial))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return replaced
