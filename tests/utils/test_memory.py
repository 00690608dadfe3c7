import pytest
import torch

from libdet.utils.memory import retry_if_cuda_oom


class _Device:
    """An object with ``.to`` and ``.device`` that records where it was moved."""

    device = "fake-gpu"

    def to(self, device):
        moved = _Device()
        moved.device = device
        return moved


def test_retries_after_oom_then_falls_back_to_cpu():
    calls = []

    def flaky(x, *, y):
        calls.append((x.device, y.device, x.__class__))
        if len(calls) < 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return "ok"

    assert retry_if_cuda_oom(flaky)(_Device(), y=_Device()) == "ok"
    assert [c[:2] for c in calls] == [("fake-gpu", "fake-gpu")] * 2 + [("cpu", "cpu")]


def test_first_retry_succeeds_without_moving_inputs():
    calls = []

    def once(t):
        calls.append(t.device.type)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return t * 2

    out = retry_if_cuda_oom(once)(torch.ones(2))
    assert torch.equal(out, torch.full((2,), 2.0)) and calls == ["cpu", "cpu"]


def test_other_errors_propagate_at_once():
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        retry_if_cuda_oom(broken)()
    assert calls == [1]
