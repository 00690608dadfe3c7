"""Retry a computation after a CUDA out-of-memory error, finally on the CPU."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

__all__ = ["retry_if_cuda_oom"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _is_cuda_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)


@contextmanager
def _ignore_cuda_oom() -> Iterator[None]:
    try:
        yield
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not _is_cuda_oom(e):
            raise


def _to_cpu(x: Any) -> Any:
    return x.to(device="cpu") if isinstance(x, torch.Tensor) or hasattr(x, "to") and hasattr(x, "device") else x


def retry_if_cuda_oom(func: _F) -> _F:
    """Make ``func`` survive CUDA out-of-memory errors (e.g. pasting many masks on a large image).

    On OOM it frees PyTorch's cached CUDA memory and calls ``func`` again; if that fails with OOM too, it calls
    ``func`` once more with every positional and keyword argument that has ``.to`` and ``.device``
    (tensors, ``Boxes``, ...) moved to the CPU, logging that it does. Other errors, and an OOM of the CPU
    attempt, propagate. The caller must accept CPU outputs from that last attempt.

    ``func`` should be free of side effects, since it may run up to three times.
    """

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _ignore_cuda_oom():
            return func(*args, **kwargs)
        torch.cuda.empty_cache()  # a no-op where CUDA was never initialised
        with _ignore_cuda_oom():
            return func(*args, **kwargs)
        logging.getLogger(__name__).info("CUDA out of memory in %s; retrying it on the CPU.", func.__qualname__)
        return func(*(_to_cpu(a) for a in args), **{k: _to_cpu(v) for k, v in kwargs.items()})

    return wrapped  # type: ignore[return-value]
