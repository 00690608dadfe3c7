import runpy

import pytest
import torch

from libdet.utils.collect_env import collect_env_info


def test_report_names_the_versions():
    info = collect_env_info()
    assert torch.__version__ in info
    assert "libdet" in info and "CUDA available" in info and "torchvision" in info
    assert "libdet op nms_rotated" in info  # declared ops are listed without being built


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # imported by the test above
def test_runs_as_a_module(capsys):
    runpy.run_module("libdet.utils.collect_env", run_name="__main__")
    assert "PyTorch" in capsys.readouterr().out
