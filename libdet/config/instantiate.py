"""Build objects from lazy configs: ``instantiate`` and the import-path helpers it relies on."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import types
from collections import abc
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["instantiate", "locate", "InstantiationError", "target_to_string"]

_TARGET_KEY = "_target_"


class InstantiationError(RuntimeError):
    """Raised when a config node cannot be built; the message names the node and its ``_target_``."""


def _import_error_hint(name: str, module: Any) -> str:
    candidates = [n for n in dir(module) if not n.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=3)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _import(name: str, path: str) -> Any:
    """Import module ``name`` for ``locate(path)``; ``None`` if no such module exists."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        error: BaseException = e  # the module exists, but something it imports does not
    except Exception as e:  # the module exists but raised while importing
        error = e
    raise ImportError(
        f"Cannot locate {path!r}: importing {name!r} failed with {type(error).__name__}: {error}"
    ) from error


def locate(path: str) -> Any:
    """Import an object from its dotted path, e.g. ``"libdet.structures.Boxes"``.

    The path is resolved part by part like ``from a.b import c``: an attribute of the object reached
    so far wins, otherwise a submodule is imported. Nested attributes (``"module.Class.method"``) work.

    Raises:
        ImportError: naming the path, the part that could not be found and, when a module exists
            but fails to import, the underlying error.
    """
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ImportError(f"Cannot locate {path!r}: expected a dotted import path such as 'torch.nn.Linear'.")
    parts = path.split(".")
    obj = _import(parts[0], path)
    if obj is None:
        raise ImportError(f"Cannot locate {path!r}: no module named {parts[0]!r}.")
    for i in range(1, len(parts)):
        part, prefix = parts[i], ".".join(parts[: i + 1])
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        module = _import(prefix, path) if isinstance(obj, types.ModuleType) else None
        if module is None:
            raise ImportError(
                f"Cannot locate {path!r}: {'.'.join(parts[:i])!r} has no attribute {part!r}."
                + _import_error_hint(part, obj)
            )
        obj = module
    return obj


def target_to_string(target: Any) -> str | None:
    """The import path of a class or function, or ``None`` if it cannot be imported back by that path.

    Lambdas, locally defined functions and objects whose ``__module__`` does not expose them have no
    import path; such a ``_target_`` cannot be written to YAML.
    """
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    # Prefer the shortest public path that resolves to the same object (e.g. libdet.structures.Boxes).
    candidates = []
    module_parts = module.split(".")
    for i in range(1, len(module_parts) + 1):
        candidates.append(".".join(module_parts[:i]) + "." + qualname)
    for candidate in candidates:
        if any(p.startswith("_") for p in candidate.split(".")[:-1] if p != "__main__"):
            continue
        try:
            if locate(candidate) is target:
                return candidate
        except ImportError:
            continue
    full = f"{module}.{qualname}"
    try:
        if locate(full) is target:
            return full
    except ImportError:
        pass
    return None


def _node_name(path: str) -> str:
    return path if path else "<root>"


def _describe_target(target: Any) -> str:
    if isinstance(target, str):
        return target
    return target_to_string(target) or repr(target)


def _instantiate(cfg: Any, path: str) -> Any:
    if isinstance(cfg, ListConfig):
        return [_instantiate(cfg[i], f"{path}[{i}]") for i in range(len(cfg))]
    if isinstance(cfg, (list, tuple)) and not isinstance(cfg, str):
        built = [_instantiate(x, f"{path}[{i}]") for i, x in enumerate(cfg)]
        return tuple(built) if isinstance(cfg, tuple) else built
    if isinstance(cfg, DictConfig) and dataclasses.is_dataclass(cfg._metadata.object_type):
        return OmegaConf.to_object(cfg)
    if isinstance(cfg, abc.Mapping):
        is_call = _TARGET_KEY in cfg
        kwargs = {}
        for key in cfg.keys():
            if key == _TARGET_KEY:
                continue
            child = f"{path}.{key}" if path else str(key)
            kwargs[key] = _instantiate(cfg[key], child)
        if not is_call:
            return kwargs
        target = cfg[_TARGET_KEY]
        if isinstance(target, str):
            try:
                target = locate(target)
            except ImportError as e:
                raise InstantiationError(
                    f"Cannot import the _target_ {cfg[_TARGET_KEY]!r} of config node {_node_name(path)!r}: {e}"
                ) from e
        if not callable(target):
            raise InstantiationError(f"The _target_ of config node {_node_name(path)!r} is not callable: {target!r}.")
        try:
            return target(**kwargs)
        except InstantiationError:
            raise
        except Exception as e:
            signature_hint = ""
            if isinstance(e, TypeError):
                try:
                    signature_hint = f" Signature: {_describe_target(target)}{inspect.signature(target)}."
                except (TypeError, ValueError):
                    pass
            raise InstantiationError(
                f"Error while building config node {_node_name(path)!r} "
                f"(_target_={_describe_target(cfg[_TARGET_KEY])}): {type(e).__name__}: {e}." + signature_hint
            ) from e
    return cfg


def instantiate(cfg: Any) -> Any:
    """Recursively build the objects a config describes.

    - A mapping with a ``_target_`` key is a call: its other values are instantiated first, then the
      target (a class, a function, or an import-path string) is called with them as keyword arguments.
    - A mapping without ``_target_`` becomes a ``dict`` of instantiated values; lists and ``ListConfig``
      become lists of instantiated values.
    - Anything else (numbers, strings, objects already built) is returned unchanged.

    Interpolations such as ``"${..num_classes}"`` are resolved relative to the node's position in the
    config it was taken from.

    Raises:
        InstantiationError: naming the config node (e.g. ``"model.roi_heads.box_head"``) whose target
            could not be imported or whose constructor raised; the original exception is chained.
    """
    return _instantiate(cfg, "")
