"""Evaluating must not pay for torch.compile's machinery: importing libdet.evaluation leaves torch._dynamo alone."""

import subprocess
import sys

import torch


def test_import_evaluation_does_not_import_dynamo_or_torchvision():
    code = (
        "import sys\n"
        "import libdet.evaluation\n"
        "loaded = [m for m in ('torch._dynamo', 'torch._inductor', 'torchvision', 'libdet.layers') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == ""


def test_choose_kernel_is_marked_like_assume_constant_result():
    """compiled_ops sets the flag that torch.compiler.assume_constant_result sets, without importing dynamo."""
    from libdet.utils.compiled_ops import _choose_kernel

    def probe():
        return 0

    torch.compiler.assume_constant_result(probe)
    assert vars(probe) == {"_dynamo_marked_constant": True}
    assert _choose_kernel._dynamo_marked_constant is True
