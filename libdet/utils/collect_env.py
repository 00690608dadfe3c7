"""A report of the software and hardware environment, to paste into bug reports.

Run ``python -m libdet.utils.collect_env``.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys

__all__ = ["collect_env_info"]


def _version_of(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an optional package may fail in many ways on import
        return "not available" if isinstance(e, ImportError) else f"import failed ({type(e).__name__})"
    version = getattr(module, "__version__", None)
    if version is None:  # e.g. pycocotools: ask the installed distribution
        from importlib import metadata

        try:
            version = metadata.version(module_name)
        except metadata.PackageNotFoundError:
            version = "unknown version"
    return str(version)


def _libdet_info() -> list[tuple[str, str]]:
    import libdet

    rows = [("libdet", f"{getattr(libdet, '__version__', 'unknown')} @{os.path.dirname(libdet.__file__)}")]
    try:
        from libdet.utils import compiled_ops

        compiled_ops.register_core_ops()  # declares the ops; builds nothing
        for name, status in compiled_ops.ops_status().items():
            rows.append((f"libdet op {name}", status))
    except Exception as e:  # the report must not fail because of the extension machinery
        rows.append(("libdet compiled ops", f"unknown ({type(e).__name__}: {e})"))
    return rows


def _accelerator_info() -> list[tuple[str, str]]:
    import torch

    rows = [("CUDA available", str(torch.cuda.is_available()))]
    if torch.cuda.is_available():
        rows.append(("CUDA (torch built with)", str(torch.version.cuda)))
        names: dict[str, list[str]] = {}
        for i in range(torch.cuda.device_count()):
            cap = ".".join(map(str, torch.cuda.get_device_capability(i)))
            names.setdefault(f"{torch.cuda.get_device_name(i)} (arch={cap})", []).append(str(i))
        for name, ids in names.items():
            rows.append((f"GPU {','.join(ids)}", name))
        rows.append(("CUDA_HOME", os.environ.get("CUDA_HOME", "not set")))
        rows.append(("TORCH_CUDA_ARCH_LIST", os.environ.get("TORCH_CUDA_ARCH_LIST", "not set")))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        rows.append(("MPS available", str(mps.is_available())))
    return rows


def collect_env_info() -> str:
    """The environment as a two-column table: platform, Python, libdet (and whether its compiled ops are
    loaded), torch and its accelerators, and the versions of the libraries libdet uses."""
    import torch
    from tabulate import tabulate

    rows: list[tuple[str, str]] = [
        ("sys.platform", sys.platform),
        ("Platform", platform.platform()),
        ("Python", sys.version.replace("\n", " ")),
        ("numpy", _version_of("numpy")),
    ]
    rows += _libdet_info()
    rows += [
        ("PyTorch", f"{torch.__version__} @{os.path.dirname(torch.__file__)}"),
        ("PyTorch debug build", str(torch.version.debug)),
        ("CPU threads (torch)", str(torch.get_num_threads())),
    ]
    rows += _accelerator_info()
    for name in ("torchvision", "fvcore", "iopath", "omegaconf", "hydra", "pycocotools", "scipy", "cv2", "PIL"):
        rows.append((name, _version_of(name)))
    return tabulate(rows)


if __name__ == "__main__":
    print(collect_env_info())
