"""The runtime environment: seeding every RNG and a report of versions and compiled-op status."""

from __future__ import annotations

import importlib
import os
import platform
import random
import subprocess
import sys
from datetime import datetime

import numpy as np
import torch
from tabulate import tabulate

__all__ = ["seed_all_rng", "collect_env_info", "cpu_has_native_bf16", "cpu_model_name", "TORCH_VERSION"]

TORCH_VERSION = tuple(int(x) for x in torch.__version__.split(".")[:2])
"""``(major, minor)`` of the installed torch."""


def seed_all_rng(seed: int | None = None) -> int:
    """Seed Python's, NumPy's and torch's RNGs; a random seed is drawn (and logged) when ``None``.

    Returns:
        The seed used.
    """
    if seed is None:
        seed = (os.getpid() + int(datetime.now().strftime("%S%f")) + int.from_bytes(os.urandom(2), "big")) % 2**31
        import logging

        logging.getLogger(__name__).info("Using a generated random seed %d", seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def _module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as e:  # an optional package may be missing or broken
        return f"not available ({type(e).__name__})"
    return str(getattr(module, "__version__", "unknown version")) + f" @{os.path.dirname(module.__file__ or '')}"


def _compiled_ops_rows() -> list[tuple[str, str]]:
    # The report imports the modules that declare libdet's ops, to list them; it never compiles one.
    from libdet.utils import compiled_ops

    try:
        compiled_ops.register_core_ops()
    except Exception as e:
        return [("libdet compiled ops", f"op modules not importable ({type(e).__name__}: {e})")]
    return [(f"libdet op {name}", status) for name, status in compiled_ops.ops_status().items()]


def _nvcc_version() -> str:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return "not found"
    try:
        out = subprocess.check_output([os.path.join(CUDA_HOME, "bin", "nvcc"), "-V"], timeout=10)
    except (OSError, subprocess.SubprocessError):
        return f"not runnable ({CUDA_HOME})"
    return out.decode().strip().splitlines()[-1] + f" @{CUDA_HOME}"


_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``, as Linux reports them in
    ``/proc/cpuinfo``), so that bf16 autocast speeds CPU training up instead of emulating bf16 slowly.

    Returns False where the flags cannot be read (other systems, a missing file): bf16 is then left off.
    """
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)
    except OSError:
        return False
    return False


def cpu_model_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name as Linux reports it (e.g. ``"AMD EPYC 7B13"``), for benchmark reports; elsewhere
    ``platform.processor()``, or ``"unknown"``."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def collect_env_info() -> str:
    """A table of the Python, libdet, torch, torchvision, CUDA and compiled-op environment."""
    import libdet

    rows: list[tuple[str, str]] = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", "")),
        ("machine", platform.machine()),
        ("numpy", np.__version__),
        ("libdet", libdet.__version__ + f" @{os.path.dirname(libdet.__file__)}"),
    ]
    rows += _compiled_ops_rows()
    rows += [
        ("PyTorch", torch.__version__ + f" @{os.path.dirname(torch.__file__)}"),
        ("PyTorch debug build", str(torch.version.debug)),
        ("torch._C._GLIBCXX_USE_CXX11_ABI", str(torch._C._GLIBCXX_USE_CXX11_ABI)),
        ("CUDA available", str(torch.cuda.is_available())),
        ("PyTorch built with CUDA", str(torch.version.cuda)),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = ".".join(map(str, torch.cuda.get_device_capability(i)))
            rows.append((f"GPU {i}", f"{torch.cuda.get_device_name(i)} (arch={cap})"))
        rows.append(("nvcc", _nvcc_version()))
        rows.append(("cuDNN", str(torch.backends.cudnn.version())))
    rows.append(("TORCH_CUDA_ARCH_LIST", os.environ.get("TORCH_CUDA_ARCH_LIST", "")))
    for name in ("torchvision", "fvcore", "iopath", "omegaconf", "hydra", "pycocotools", "submitit", "cv2"):
        rows.append((name, _module_version(name)))
    rows.append(("CPU threads", str(torch.get_num_threads())))
    rows.append(("CPU native bfloat16", str(cpu_has_native_bf16())))
    return tabulate(rows)


if __name__ == "__main__":
    print(collect_env_info())
