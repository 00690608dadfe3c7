"""Packaging hook: ship the C++/CUDA sources of ``csrc/`` inside the package.

All metadata lives in ``pyproject.toml``. Nothing is compiled at install time, so ``pip install .`` works
without a C++ compiler; the ops are compiled on first use (see ``libdet/layers/_ops.py``), which needs
the sources at ``libdet/_csrc`` in an installed package.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_ROOT = Path(__file__).resolve().parent


class BuildPyWithCsrc(build_py):
    """``build_py`` that also copies ``csrc/`` to ``<build>/libdet/_csrc``."""

    def run(self) -> None:
        super().run()
        source = _ROOT / "csrc"
        if source.is_dir() and not self.editable_mode:
            target = Path(self.build_lib) / "libdet" / "_csrc"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.o", "*.so", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithCsrc})
