"""detectron2's YAML config layer: :class:`CfgNode`, :func:`get_cfg`, the global config and ``@configurable``.

The YAML config sits at the edge of libdet: :mod:`libdet.config.yaml_translate` turns a ``CfgNode`` into the
lazy config (``model``, ``dataloader``, ``optimizer``, ``lr_multiplier``, ``train``) that every libdet tool
instantiates, so a YAML config and its lazy twin build the very same modules. Nothing in libdet's core reads a
``CfgNode``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from libdet.utils.file_io import PathManager

__all__ = ["CfgNode", "configurable", "get_cfg", "global_cfg", "set_global_cfg"]

_BASE_KEY = "_BASE_"

logger = logging.getLogger(__name__)


class CfgNode(_FvcoreCfgNode):
    """A yacs config node (attribute access, ``freeze``, ``merge_from_list``, ``dump``) whose
    :meth:`merge_from_file` loads YAML safely, follows ``_BASE_`` chains, upgrades configs of older
    ``VERSION`` and names the file and key of every error.
    """

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict[str, Any]:
        """The mapping in YAML file ``filename``, merged over the files its ``_BASE_`` names (a path or a list,
        relative to ``filename`` unless absolute or a URL; later bases and the file itself win).

        Args:
            filename: the YAML file.
            allow_unsafe: permit Python tags (``!!python/...``), loaded with ``yaml.unsafe_load``. Off by
                default: a config file from elsewhere cannot run code.

        Raises:
            FileNotFoundError: the file, or a base it names, does not exist (names both).
            ValueError: the file is not a YAML mapping, or uses Python tags without ``allow_unsafe``.
        """
        if not PathManager.isfile(filename):
            raise FileNotFoundError(f"Config file {filename!r} does not exist.")
        with PathManager.open(filename, "r") as f:
            text = f.read()
        try:
            loaded = yaml.safe_load(text)
        except yaml.constructor.ConstructorError as e:
            if not allow_unsafe:
                raise ValueError(
                    f"Config file {filename!r} uses a YAML tag that safe loading refuses ({e.problem}). Write the "
                    "value as plain YAML, or pass allow_unsafe=True for a file you trust."
                ) from e
            logger.warning(f"Loading config {filename} with yaml.unsafe_load: it may run code.")
            loaded = yaml.unsafe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"Config file {filename!r} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"Config file {filename!r} must hold a YAML mapping, got {type(loaded).__name__}.")

        bases = loaded.pop(_BASE_KEY, None)
        if bases is None:
            return loaded
        merged: dict[str, Any] = {}
        for base in [bases] if isinstance(bases, str) else list(bases):
            base_file = os.path.expanduser(str(base))
            if not (base_file.startswith("/") or "://" in base_file):
                base_file = os.path.join(os.path.dirname(filename), base_file)
            if not PathManager.isfile(base_file):
                raise FileNotFoundError(f"Config file {filename!r}: its _BASE_ {base!r} ({base_file}) does not exist.")
            _merge_dict_into(cls.load_yaml_with_base(base_file, allow_unsafe=allow_unsafe), merged, base_file)
        _merge_dict_into(loaded, merged, filename)
        return merged

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge YAML file ``cfg_filename`` (and its ``_BASE_`` chain) into this config.

        A file of an older ``VERSION`` is merged into this config downgraded to that version, then the
        result is upgraded (see :mod:`libdet.config.compat`).

        Raises:
            KeyError: the file sets a key this config does not have (names the file, the key and close keys).
            ValueError: a value's type does not match the default's (names the file and the key).
        """
        loaded = type(self)(self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe))
        from .compat import downgrade_config, guess_version, upgrade_config

        latest = self.get("VERSION", None)
        version = loaded.get("VERSION", None)
        if latest is None or version == latest:
            self._checked_merge(loaded, f"config file {cfg_filename!r}")
            return
        if version is None:
            version = guess_version(loaded, cfg_filename)
            if version == latest:
                self._checked_merge(loaded, f"config file {cfg_filename!r}")
                return
        if version > latest:
            raise ValueError(f"Config file {cfg_filename!r} has VERSION {version}, newer than libdet's {latest}.")
        logger.warning(f"Config {cfg_filename!r} has VERSION {version}; upgrading it to version {latest}.")
        old = downgrade_config(self, to_version=version)
        old._checked_merge(loaded, f"config file {cfg_filename!r}")
        new = upgrade_config(old)
        self.clear()
        self.update(new)

    def merge_from_other_cfg(self, cfg_other: Any) -> None:
        """Merge another config node into this one (unknown keys raise ``KeyError`` naming them)."""
        self._checked_merge(cfg_other, "the merged config")

    def merge_from_list(self, cfg_list: list[Any]) -> CfgNode:
        """Merge ``[key1, value1, key2, value2, ...]`` (e.g. command-line ``KEY VALUE`` pairs); values are YAML
        literals (``"(1, 2)"``, ``"0.5"``) or strings.

        Raises:
            KeyError / ValueError: naming the key and the value at fault.
        """
        if len(cfg_list) % 2 != 0:
            raise ValueError(f"merge_from_list: expected KEY VALUE pairs, got an odd number of items: {cfg_list}.")
        for key in cfg_list[0::2]:
            if not isinstance(key, str):
                raise TypeError(f"merge_from_list: keys must be strings, got {key!r}.")
            node: Any = self
            parts = key.split(".")
            for i, part in enumerate(parts):
                if not isinstance(node, dict) or part not in node:
                    if isinstance(node, _FvcoreCfgNode) and node.is_new_allowed():
                        break
                    prefix = ".".join(parts[:i])
                    raise KeyError(_unknown_key_message(key, node, prefix, "the override list"))
                node = node[part]
        try:
            super().merge_from_list(cfg_list)
        except (AssertionError, ValueError) as e:
            raise ValueError(f"merge_from_list {cfg_list}: {e}") from e
        return self

    def _checked_merge(self, other: Any, source: str) -> None:
        _check_known_keys(other, self, "", source)
        try:
            super().merge_from_other_cfg(other)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("COMPUTED_") and name in self and self[name] != val:
            raise KeyError(f"Computed attribute {name!r} already exists with a different value ({self[name]!r}).")
        super().__setattr__(name, val)

    def dump(self, **kwargs: Any) -> str:
        """The config as a YAML string (``yaml.safe_dump`` options in ``kwargs``); tuples are written as lists and
        repeated values in full (no YAML anchors)."""

        def plain(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: plain(v) for k, v in node.items()}
            if isinstance(node, (list, tuple)):
                return [plain(v) for v in node]
            return node

        return yaml.dump(plain(self), Dumper=_NoAliasSafeDumper, **kwargs)


class _NoAliasSafeDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _merge_dict_into(src: dict[str, Any], dst: dict[str, Any], filename: str) -> None:
    """Recursively merge plain dict ``src`` into ``dst`` (values of ``src`` win)."""
    for key, value in src.items():
        if isinstance(value, dict) and key in dst:
            if not isinstance(dst[key], dict):
                raise ValueError(f"Config file {filename!r}: key {key!r} is a mapping but its base sets a value.")
            _merge_dict_into(value, dst[key], filename)
        else:
            dst[key] = value


def _unknown_key_message(full_key: str, node: Any, prefix: str, source: str) -> str:
    known = [f"{prefix}.{k}" if prefix else str(k) for k in node] if isinstance(node, dict) else []
    close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"{source}: unknown config key {full_key!r}.{hint} A key must exist in the defaults (get_cfg()) or be "
        "added before merging (e.g. by a project's add_*_config(cfg))."
    )


def _check_known_keys(src: Any, dst: Any, prefix: str, source: str) -> None:
    """Raise ``KeyError`` naming the first key of ``src`` that ``dst`` does not have (unless new keys are allowed)."""
    for key, value in src.items():
        full_key = f"{prefix}.{key}" if prefix else str(key)
        if key not in dst:
            if isinstance(dst, _FvcoreCfgNode) and dst.is_new_allowed():
                continue
            raise KeyError(_unknown_key_message(full_key, dst, prefix, source))
        if isinstance(value, dict) and isinstance(dst[key], dict):
            _check_known_keys(value, dst[key], full_key, source)


global_cfg = CfgNode()
"""A config shared by the whole process, for quick experiments (``from libdet.config import global_cfg``)."""


def get_cfg() -> CfgNode:
    """A fresh copy of the default config (every key and value of detectron2's ``config/defaults.py``)."""
    from .defaults import _C

    return _C.clone()


def set_global_cfg(cfg: CfgNode) -> None:
    """Replace the contents of :data:`global_cfg` with ``cfg`` (a copy), e.g. in a training script."""
    global_cfg.clear()
    global_cfg.update(cfg.clone() if isinstance(cfg, CfgNode) else cfg)


# @configurable: detectron2's way for user classes and functions to accept a config


def configurable(init_func: Callable | None = None, *, from_config: Callable | None = None) -> Callable:
    """Let a class ``__init__`` (or a function) be called either with explicit arguments or with a config.

    On ``__init__`` the class defines ``@classmethod from_config(cls, cfg, ...)`` returning the keyword
    arguments; ``MyHead(cfg, input_shape)`` then calls ``MyHead(**MyHead.from_config(cfg, input_shape))``. On a
    function, give ``from_config`` to the decorator::

        @configurable(from_config=lambda cfg: {"x": cfg.X})
        def make(x, y=2): ...

        make(cfg)        # x from the config
        make(x=1)        # plain call

    Arguments that ``from_config`` does not take are passed through to the decorated callable. libdet's own
    modules do not use this: it serves user classes registered for YAML configs.
    """
    if init_func is not None:
        if not (inspect.isfunction(init_func) and init_func.__name__ == "__init__"):
            raise TypeError("@configurable without arguments decorates a class's __init__ only.")

        @functools.wraps(init_func)
        def wrapped_init(self: Any, *args: Any, **kwargs: Any) -> None:
            from_config_func = getattr(type(self), "from_config", None)
            if from_config_func is None:
                raise AttributeError(f"{type(self).__name__} is @configurable but has no classmethod 'from_config'.")
            if not inspect.ismethod(from_config_func):
                raise TypeError(f"{type(self).__name__}.from_config must be a classmethod.")
            if _called_with_cfg(*args, **kwargs):
                init_func(self, **_get_args_from_config(from_config_func, *args, **kwargs))
            else:
                init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        return configurable  # used as @configurable() on __init__
    if not inspect.isfunction(from_config):
        raise TypeError("configurable(from_config=...) must be a function.")

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(*args, **kwargs):
                return func(**_get_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    """Whether a call passes a config: a ``CfgNode`` / ``DictConfig`` first argument or a ``cfg=`` keyword."""
    from omegaconf import DictConfig

    if args and isinstance(args[0], (_FvcoreCfgNode, DictConfig)):
        return True
    return isinstance(kwargs.get("cfg", None), (_FvcoreCfgNode, DictConfig))


def _get_args_from_config(from_config_func: Callable, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call ``from_config_func`` with the arguments it takes; the other keyword arguments are added to its result."""
    signature = inspect.signature(from_config_func)
    first = next(iter(signature.parameters), None)
    if first != "cfg":
        name = getattr(from_config_func, "__qualname__", repr(from_config_func))
        raise TypeError(f"{name} must take 'cfg' as its first argument.")
    takes_var_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    if takes_var_kwargs:
        return from_config_func(*args, **kwargs)
    supported = set(signature.parameters)
    extra = {name: kwargs.pop(name) for name in list(kwargs) if name not in supported}
    ret = from_config_func(*args, **kwargs)
    ret.update(extra)
    return ret
