"""File access through iopath's ``PathManager``, with libdet's model-zoo URL prefix, and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

from iopath.common.file_io import HTTPURLHandler, OneDrivePathHandler, PathHandler
from iopath.common.file_io import PathManager as _PathManagerBase

__all__ = [
    "PathManager",
    "PathHandler",
    "ModelCatalogHandler",
    "ModelZooHandler",
    "atomic_write",
    "MODEL_ZOO_URL_PREFIX",
]

# Public detectron2 model-zoo weights load into libdet models unchanged, so both prefixes map there.
MODEL_ZOO_URL_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

PathManager = _PathManagerBase()
"""The project-wide path manager: local paths, ``http(s)://``, ``libdet://``, ``detectron2://`` and ``catalog://``."""


class ModelZooHandler(PathHandler):
    """Resolve ``libdet://<path>`` and ``detectron2://<path>`` to the model-zoo URL (downloaded and cached)."""

    PREFIXES = ("libdet://", "detectron2://")

    def _get_supported_prefixes(self) -> list[str]:
        return list(self.PREFIXES)

    def _url(self, path: str) -> str:
        for prefix in self.PREFIXES:
            if path.startswith(prefix):
                return MODEL_ZOO_URL_PREFIX + path[len(prefix) :]
        raise ValueError(f"{path!r} does not start with one of {self.PREFIXES}.")

    def _get_local_path(self, path: str, **kwargs) -> str:
        return PathManager.get_local_path(self._url(path), **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs) -> IO:
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


class ModelCatalogHandler(PathHandler):
    """Resolve detectron2's ``catalog://ImageNetPretrained/<name>`` (the Caffe2 ImageNet backbones that the GN and
    X-152 YAML configs start from) to its Detectron URL (downloaded and cached)."""

    PREFIX = "catalog://"
    URL_PREFIX = "https://dl.fbaipublicfiles.com/detectron/"
    IMAGENET_MODELS = {
        "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
        "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
        "FAIR/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
        "FAIR/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
        "FAIR/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
        "FAIR/X-101-64x4d": "ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl",
        "FAIR/X-152-32x8d-IN5k": "ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl",
    }

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _url(self, path: str) -> str:
        name = path[len(self.PREFIX) :]
        key = name.removeprefix("ImageNetPretrained/")
        if not name.startswith("ImageNetPretrained/") or key not in self.IMAGENET_MODELS:
            raise ValueError(
                f"{path!r} is not in the model catalog; known: "
                f"{sorted(self.PREFIX + 'ImageNetPretrained/' + k for k in self.IMAGENET_MODELS)}."
            )
        return self.URL_PREFIX + self.IMAGENET_MODELS[key]

    def _get_local_path(self, path: str, **kwargs) -> str:
        return PathManager.get_local_path(self._url(path), **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs) -> IO:
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


PathManager.register_handler(HTTPURLHandler())
PathManager.register_handler(OneDrivePathHandler())
PathManager.register_handler(ModelZooHandler())
PathManager.register_handler(ModelCatalogHandler())


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open ``path`` for writing so that readers only ever see the old or the complete new file.

    Local paths are written to a temporary file in the same directory, flushed to disk and renamed
    over ``path`` when the ``with`` block ends without an exception; on an exception the temporary
    file is removed and ``path`` is untouched. Other URIs are written through ``PathManager``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}.")
    local = "://" not in path or path.startswith("file://")
    if not local:
        with PathManager.open(path, mode, **open_kwargs) as f:
            yield f
        return
    path = path[len("file://") :] if path.startswith("file://") else path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
