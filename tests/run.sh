#!/usr/bin/env bash
# The libdet test command: sets up everything it needs on a fresh machine, then runs the suite.
#
#   bash tests/run.sh [pytest args]
#
# 1. creates a virtual environment in ./.venv (or $LIBDET_VENV) unless it exists;
#    LIBDET_VENV=current uses the active Python environment instead;
# 2. installs torch + torchvision as a matching pair from PyPI, then libdet (editable) with its
#    test extras;
# 3. compiles libdet's C++ ops (csrc/) when a C++ compiler is present, failing if they do not build,
#    so that the kernels are tested against their pure-PyTorch twins;
# 4. with LIBDET_TEST_SLURM=install (as root, Debian/Ubuntu): installs slurm-wlm + munge so that the SLURM
#    integration test runs instead of skipping;
# 5. runs pytest on 2 workers.
# On a fresh machine without SLURM, a GPU, a compiler or optional packages the suite passes: the tests that need
# them skip with a reason (listed in pytest's summary). CI (.ci/run) checks this in a fresh environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_SPEC=${LIBDET_TORCH_SPEC:-"torch==2.15.*"}
TORCHVISION_SPEC=${LIBDET_TORCHVISION_SPEC:-"torchvision==0.29.*"}
VENV=${LIBDET_VENV:-.venv}

if [ "$VENV" != "current" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi

pip_install() {
  # Quiet install; drops the one-line-per-package notices about unusable local index mirrors.
  python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
}

echo "== installing dependencies"
pip_install --upgrade pip setuptools wheel
pip_install "$TORCH_SPEC" "$TORCHVISION_SPEC"
pip_install -e ".[test]"

if command -v "${CXX:-c++}" >/dev/null 2>&1; then
  echo "== compiling libdet ops (a C++ compiler is present, so they must build)"
  MAX_JOBS=${MAX_JOBS:-2} python -m libdet.utils.compiled_ops
else
  echo "== no C++ compiler found: the ops' pure-PyTorch twins are tested, the kernels are skipped"
fi

if [ "${LIBDET_TEST_SLURM:-}" = install ] && ! command -v slurmctld >/dev/null 2>&1; then
  # Best effort: the SLURM integration test (tests/engine/test_slurm.py) skips when this fails.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing slurm-wlm and munge (for the SLURM integration test)"
    { timeout 600 apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq slurm-wlm munge >/dev/null; } \
      || echo "   (install failed: the SLURM test will skip)"
  else
    echo "== LIBDET_TEST_SLURM=install needs root and apt-get: the SLURM test will skip"
  fi
fi

echo "== running tests"
python -m pytest -n "${LIBDET_TEST_WORKERS:-2}" "$@"
