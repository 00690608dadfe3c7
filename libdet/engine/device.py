"""Which device a process trains or predicts on (:func:`resolve_device`)."""

from __future__ import annotations

import torch

from libdet.utils import comm

__all__ = ["resolve_device"]


def resolve_device(device: str | None, setting: str = "train.device") -> torch.device:
    """The torch device a setting names: ``"auto"`` (or unset) is this process's GPU when CUDA is available, else
    the CPU; any other value is parsed by ``torch.device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``; a bare ``"cuda"``
    is this process's local GPU).

    Args:
        device: the value.
        setting: the name of the setting (config key or command-line flag) for error messages.

    Raises:
        ValueError: naming ``setting`` when the value is not a device or asks for CUDA without CUDA.
    """
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", comm.get_local_rank() % max(torch.cuda.device_count(), 1))
        return torch.device("cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError as e:
        raise ValueError(f"{setting}={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{setting}={device!r} but CUDA is not available; use {setting}=auto or cpu.")
        if dev.index is None:
            dev = torch.device("cuda", comm.get_local_rank() % torch.cuda.device_count())
    return dev
