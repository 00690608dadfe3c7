"""Packaging hook: ship the C++/CUDA sources of ``csrc/`` and the model-zoo ``configs/`` inside the package.

All metadata lives in ``pyproject.toml``. Nothing is compiled at install time, so ``pip install .`` works
without a C++ compiler; the ops are compiled on first use (see ``libdet/utils/compiled_ops.py``), which needs
the sources at ``libdet/_csrc`` in an installed package. ``libdet.model_zoo`` finds the configs at
``libdet/model_zoo/configs`` in an installed package (in an editable install, at the repository's ``configs/``).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_ROOT = Path(__file__).resolve().parent
# repository folder -> where it goes in the built package
_COPIED_TREES = (("csrc", ("libdet", "_csrc")), ("configs", ("libdet", "model_zoo", "configs")))


class BuildPyWithCsrc(build_py):
    """``build_py`` that also copies ``csrc/`` to ``<build>/libdet/_csrc`` and ``configs/`` to
    ``<build>/libdet/model_zoo/configs``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source_name, target_parts in _COPIED_TREES:
            source = _ROOT / source_name
            if source.is_dir():
                target = Path(self.build_lib).joinpath(*target_parts)
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.o", "*.so", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithCsrc})
