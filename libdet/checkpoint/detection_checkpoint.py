"""Checkpointer for libdet models: safe loading of libdet ``.pth`` and detectron2 ``.pkl`` files, atomic saving."""

from __future__ import annotations

import collections
import logging
import os
from typing import Any

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from libdet.utils import comm
from libdet.utils.file_io import PathManager, atomic_write

from .c2_model_loading import align_and_update_state_dicts, looks_like_c2_names
from .restricted_unpickler import restricted_load

__all__ = ["DetectionCheckpointer"]

_SCALAR_TYPES = (bool, int, float, complex, str, bytes, bytearray, type(None), torch.dtype, torch.device, torch.Size)


def _weights_only_safe(value: Any, key: str) -> Any:
    """Return ``value`` in types ``torch.load(weights_only=True)`` reads back, converting numpy values.

    Raises:
        TypeError: naming ``key`` (dot-separated path in the checkpoint) when a value cannot be converted.
    """
    if isinstance(value, torch.Tensor):
        return value if type(value) in (torch.Tensor, nn.Parameter) else value.as_subclass(torch.Tensor)
    if isinstance(value, _SCALAR_TYPES):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"Cannot save checkpoint key '{key}': a numpy array of dtype object is not weights data.")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out: Any = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise TypeError(f"Cannot save checkpoint key '{key}': it has a dict key of type {type(k).__name__}.")
            out[k] = _weights_only_safe(v, f"{key}.{k}" if key else str(k))
        metadata = getattr(value, "_metadata", None)  # module versions of a state_dict()
        if metadata is not None:
            out._metadata = _weights_only_safe(metadata, f"{key}._metadata")  # type: ignore[attr-defined]
        return out
    if type(value) in (list, tuple, set):
        items = [_weights_only_safe(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return type(value)(items)
    raise TypeError(
        f"Cannot save checkpoint key '{key}': a {type(value).__module__}.{type(value).__qualname__} cannot be read "
        "back by torch.load(weights_only=True). Store tensors, numbers, strings, lists, tuples and dicts only "
        "(e.g. return plain data from the object's state_dict())."
    )


def _check_enough_loaded(
    model_state: dict[str, torch.Tensor], checkpoint_state: dict[str, Any], *, path: str, allow_partial: bool
) -> None:
    """Raise unless the checkpoint's tensors (name and shape) fit at least half of the model's values, or, with
    ``allow_partial``, at least one of its tensors. Runs before anything is copied into the model."""
    ckpt_shapes = {}
    for key, value in checkpoint_state.items():
        name = key[len("module.") :] if key.startswith("module.") else key  # DDP-wrapped when saved
        ckpt_shapes[name] = tuple(value.shape)
    sizes = {k: v.numel() for k, v in model_state.items() if not isinstance(v, nn.parameter.UninitializedTensorMixin)}
    total = sum(sizes.values())
    if total == 0:
        return
    fitting = [k for k in sizes if ckpt_shapes.get(k) == tuple(model_state[k].shape)]
    loaded = sum(sizes[k] for k in fitting)
    if (fitting and allow_partial) or loaded * 2 >= total:
        return
    mismatched = [f"{k}: {ckpt_shapes[k]} vs {tuple(model_state[k].shape)}" for k in sizes if k in ckpt_shapes][:3]
    missing = [k for k in sizes if k not in ckpt_shapes][:3]
    hint = (
        "No tensor of it fits the model; is it a checkpoint of another architecture?"
        if not fitting
        else "If this is intended (ImageNet backbone weights, fine-tuning new heads), load with allow_partial=True."
    )
    raise ValueError(
        f"Checkpoint {path!r} fits only {len(fitting)} of the model's {len(sizes)} tensors "
        f"({100.0 * loaded / total:.1f}% of its {total} values; at least 50% needed). {hint} "
        f"Sample checkpoint keys: {list(ckpt_shapes)[:3]}; model keys it lacks: {missing}; shape mismatches "
        f"(checkpoint vs model): {mismatched}."
    )


class DetectionCheckpointer(Checkpointer):
    """Save and load a model with its optimizer, scheduler and other checkpointables.

    Loads libdet ``.pth`` files with ``torch.load(weights_only=True)`` and detectron2 model-zoo ``.pkl``
    files (``{"model": {name: ndarray}, "__author__": ...}`` or a bare ``{name: ndarray}``) with an
    unpickler that refuses anything but numpy arrays and containers. Caffe2 weights (detectron2's
    ``ImageNetPretrained`` backbones: bare blob names such as ``res2_0_branch2a_w``; Detectron1 model files: a
    ``blobs`` dict) get detectron2 names and class order from
    :func:`~libdet.checkpoint.c2_model_loading.convert_c2_detectron_names`. Paths may be URLs understood by
    :data:`libdet.utils.file_io.PathManager` (``https://``, ``libdet://``, ``detectron2://``).

    Saves are atomic: a crash mid-save leaves the previous checkpoint and ``last_checkpoint`` intact.

    Args:
        model: the model (a DDP / DataParallel wrapper is unwrapped).
        save_dir: directory checkpoints are written to and resumed from ("" disables saving).
        save_to_disk: whether this process writes files; default: only the main process does.
        checkpointables: objects with ``state_dict()`` / ``load_state_dict()``, e.g. ``optimizer=...``.
    """

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool | None = None, **checkpointables: Any
    ) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = PathManager
        self.logger = logging.getLogger(__name__)

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables and ``kwargs``) and tag it as the last one.

        Raises:
            TypeError: a value that ``torch.load(weights_only=True)`` could not read back; names its key.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"DetectionCheckpointer.save: name must be a file name without folders, got {name!r}.")
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        for key, value in kwargs.items():
            if key in data:
                raise ValueError(f"DetectionCheckpointer.save: extra data key {key!r} clashes with a checkpointable.")
            data[key] = value
        data = _weights_only_safe(data, "")
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        self.path_manager.mkdirs(self.save_dir)
        with atomic_write(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record ``last_filename_basename`` in ``<save_dir>/last_checkpoint``."""
        with atomic_write(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)

    def load(
        self, path: str, checkpointables: list[str] | None = None, *, allow_partial: bool = False
    ) -> dict[str, Any]:
        """Load weights (and the named checkpointables, default all) from ``path``.

        Args:
            path: a local file or URL; "" loads nothing.
            checkpointables: names of checkpointables to restore (``[]``: the model only).
            allow_partial: accept a checkpoint that fits less than half of the model (counted in parameter
                values: tensors whose name and shape match), e.g. ImageNet backbone weights for a detector or a
                detector for fine-tuning with new heads. Even then, a checkpoint of which no tensor fits is an
                error.

        Returns:
            The checkpoint's remaining entries (e.g. ``iteration``), not consumed by the model or checkpointables.

        Raises:
            ValueError: the checkpoint fits less than half of the model and ``allow_partial`` is False, or no
                tensor fits at all; names the file and sample keys. The model is left unchanged.
        """
        if not path:
            self.logger.info("No checkpoint given; the model keeps its initialisation.")
            return {}
        self.logger.info("[DetectionCheckpointer] Loading from %s ...", path)
        # detectron2 configs append "?matching_heuristics=True" to files whose names need suffix matching
        # (e.g. MAE backbones: "blocks.0.attn.qkv.weight" -> "backbone.net.blocks.0.attn.qkv.weight")
        path, force_heuristics = _pop_matching_heuristics_query(path)
        local_path = path
        if not os.path.isfile(path):
            try:
                local_path = self.path_manager.get_local_path(path)
            except Exception as e:  # network errors come in many types
                raise RuntimeError(
                    f"Could not fetch checkpoint {path!r}: {type(e).__name__}: {e}. Without network access, "
                    "download the file elsewhere and pass its local path."
                ) from e
            if not os.path.isfile(local_path):
                raise FileNotFoundError(f"Checkpoint {path!r} not found.")
        checkpoint = self._load_file(local_path)
        if force_heuristics:
            checkpoint["matching_heuristics"] = True
        if not isinstance(checkpoint.get("model"), dict):
            raise ValueError(f"Checkpoint {path!r}: 'model' must be a dict of {{name: tensor}}.")
        incompatible = self._load_model(checkpoint, path=path, allow_partial=allow_partial)
        self._log_incompatible_keys(incompatible)
        names = self.checkpointables if checkpointables is None else checkpointables
        for key in names:
            if key not in self.checkpointables:
                raise KeyError(f"DetectionCheckpointer.load: {key!r} is not a checkpointable of this checkpointer.")
            if key in checkpoint:
                self.logger.info("Loading %s from %s ...", key, path)
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
        return checkpoint

    def _load_file(self, filename: str) -> dict[str, Any]:
        """Read a local checkpoint file into ``{"model": state_dict, ...}``."""
        if filename.endswith(".pkl"):
            return self._load_pickle(filename)
        try:
            loaded = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        except Exception as e:
            raise ValueError(
                f"Cannot load checkpoint {filename!r} with torch.load(weights_only=True): {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}. libdet only loads weights-only checkpoints; re-save "
                "a trusted file with plain tensors/numbers/containers."
            ) from e
        if not isinstance(loaded, dict):
            raise ValueError(f"Checkpoint {filename!r} holds a {type(loaded).__name__}, expected a dict.")
        if "model" not in loaded:
            if "model_state" in loaded:  # pycls (.pyth) checkpoints
                return {"model": loaded["model_state"], "__author__": "pycls", "matching_heuristics": True}
            return {"model": dict(loaded)}
        return dict(loaded)

    def _load_pickle(self, filename: str) -> dict[str, Any]:
        with open(filename, "rb") as f:
            data = restricted_load(f, filename=filename)
        if not isinstance(data, dict):
            raise ValueError(f"Checkpoint {filename!r} holds a {type(data).__name__}, expected a dict.")
        if "blobs" in data:  # a Detectron1 model file: Caffe2 blob names
            blobs = data["blobs"]
            if not isinstance(blobs, dict):
                raise ValueError(f"Checkpoint {filename!r}: 'blobs' holds a {type(blobs).__name__}, expected a dict.")
            self.logger.info("Reading a Caffe2 Detectron model file; converting its blob names.")
            return self._caffe2_checkpoint(blobs)
        if "model" in data and "__author__" in data:
            self.logger.info("Reading a file from '%s'", data["__author__"])
            return {
                "model": dict(data["model"]),
                "__author__": data["__author__"],
                "matching_heuristics": bool(data.get("matching_heuristics", False)),
            }
        # a bare {name: array} dict: its names may not follow the model's tree
        model = data.get("model", data)
        if isinstance(model, dict) and looks_like_c2_names(list(model)):  # e.g. ImageNetPretrained/MSRA/R-50.pkl
            self.logger.info("Reading Caffe2 blobs (names without dots); converting their names.")
            return self._caffe2_checkpoint(model)
        return {"model": dict(model), "__author__": "pickle", "matching_heuristics": True}

    def _caffe2_checkpoint(self, blobs: dict[str, Any]) -> dict[str, Any]:
        # Momentum buffers and scalars (learning rate, iteration) are solver state of the Caffe2 run, not weights.
        weights = {k: v for k, v in blobs.items() if isinstance(v, np.ndarray) and not k.endswith("_momentum")}
        skipped = sorted(k for k in blobs if k not in weights and not k.endswith("_momentum"))
        if skipped:
            self.logger.info("Skipping Caffe2 blobs that are not weight arrays: %s", ", ".join(skipped))
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint: dict[str, Any], *, path: str = "", allow_partial: bool = True) -> Any:
        state_dict = checkpoint["model"]
        for key, value in state_dict.items():
            if isinstance(value, np.ndarray) and value.dtype == object:
                raise ValueError(f"Checkpoint key '{key}' is an object array, not weights.")
            if not isinstance(value, (np.ndarray, torch.Tensor)):
                raise ValueError(f"Checkpoint key '{key}' holds a {type(value).__name__}, expected a tensor or array.")
        if checkpoint.get("matching_heuristics", False):
            self._convert_ndarray_to_tensor(state_dict)
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(), state_dict, c2_conversion=checkpoint.get("__author__") == "Caffe2"
            )
        _check_enough_loaded(self.model.state_dict(), checkpoint["model"], path=path, allow_partial=allow_partial)
        return super()._load_model(checkpoint)

    def resume_or_load(self, path: str, *, resume: bool = True, allow_partial: bool = False) -> dict[str, Any]:
        """Resume from ``<save_dir>/last_checkpoint`` when ``resume`` and it exists, else load ``path``.

        Resuming restores the model and every checkpointable (the checkpoint must fit the whole model);
        loading ``path`` restores model weights only, partially with ``allow_partial`` (see :meth:`load`).

        Returns:
            The checkpoint's remaining entries (e.g. ``{"iteration": 999}``).
        """
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            if last and self.path_manager.isfile(last):
                return self.load(last)
            self.logger.warning(
                "last_checkpoint in %s names a missing file %r; loading %r instead.", self.save_dir, last, path
            )
        return self.load(path, checkpointables=[], allow_partial=allow_partial)


def _pop_matching_heuristics_query(path: str) -> tuple[str, bool]:
    """Split detectron2's ``"<file>?matching_heuristics=True"`` into the file and the flag (other queries stay)."""
    from urllib.parse import parse_qs, urlencode, urlparse

    parsed = urlparse(path)
    if not parsed.query:
        return path, False
    queries = parse_qs(parsed.query)
    flag = queries.pop("matching_heuristics", ["False"]) == ["True"]
    return parsed._replace(query=urlencode(queries, doseq=True)).geturl(), flag
