"""Python-as-config: ``LazyCall`` records calls, ``LazyConfig`` loads, saves, overrides and prints configs.

A config file is plain Python that assigns ``DictConfig``/``dict``/``list`` objects to top-level names,
usually built with ``LazyCall``::

    from libdet.config import LazyCall as L
    from ..common.models.mask_rcnn_fpn import model   # relative imports of other config files

    model.roi_heads.num_classes = 3
    train = dict(max_iter=100, output_dir="./output")
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import difflib
import enum
import inspect
import keyword
import logging
import os
import types
import uuid
from collections import abc
from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from libdet.utils.file_io import PathManager, atomic_write

from .instantiate import locate, target_to_string

__all__ = ["LazyCall", "LazyConfig", "ConfigKeyError"]

logger = logging.getLogger(__name__)

_TARGET_KEY = "_target_"
# Config files are executed as members of this (virtual) package, so that relative imports inside
# them can be recognised and resolved to other config files.
_CFG_PACKAGE_PREFIX = "libdet._cfg_loader"
_YAML_LEAF_TYPES = (str, int, float, bool, type(None))


class ConfigKeyError(KeyError):
    """A config key that does not exist (or cannot exist); the message names it and its closest keys."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class LazyCall:
    """Record a call instead of making it: ``LazyCall(f)(x=1)`` gives ``{"_target_": f, "x": 1}``.

    The result is an omegaconf ``DictConfig`` that can be edited like any config and later built with
    :func:`libdet.config.instantiate`.

    Args:
        target: a class or function, or the dotted import path of one (e.g. ``"torch.optim.SGD"``).
    """

    def __init__(self, target: Any) -> None:
        if not (callable(target) or isinstance(target, (str, abc.Mapping))):
            raise TypeError(f"LazyCall target must be a callable or an import path string, got {target!r}.")
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> DictConfig:
        if args:
            raise TypeError(
                f"LazyCall({_target_name(self._target)})(...) got positional arguments {args!r}; "
                "a lazy call records keyword arguments only."
            )
        if _TARGET_KEY in kwargs:
            raise TypeError(f"LazyCall({self._target!r})(...) got a keyword argument named {_TARGET_KEY!r}.")
        target = self._target
        if dataclasses.is_dataclass(target):
            # omegaconf would turn a dataclass type into a structured config: keep its import path.
            path = target_to_string(target)
            if path is None:
                raise TypeError(f"LazyCall of dataclass {target!r}: it must be importable by its path.")
            target = path
        return DictConfig(content={_TARGET_KEY: target, **kwargs}, flags={"allow_objects": True})


def _target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))


def _config_dir_module(directory: str, package: str) -> types.ModuleType:
    module = types.ModuleType(package)
    module.__file__ = directory
    module.__path__ = [directory]
    module.__package__ = package
    return module


def _resolve_relative(current_file: str, name: str, level: int) -> str:
    """Path (without ``.py``) that ``from <level dots><name> import ...`` denotes in ``current_file``."""
    base = os.path.dirname(current_file)
    for _ in range(level - 1):
        base = os.path.dirname(base)
    return os.path.join(base, *name.split(".")) if name else base


def _load_relative(current_file: str, name: str, level: int, fromlist: Sequence[str]) -> types.ModuleType:
    target = _resolve_relative(current_file, name, level)
    statement = f"from {'.' * level}{name} import ..."
    if os.path.isfile(target + ".py"):
        return _exec_config_module(target + ".py", as_import=True)
    if os.path.isdir(target):
        package = _config_dir_module(target, f"{_CFG_PACKAGE_PREFIX}.{uuid.uuid4().hex[:8]}")
        for item in fromlist or ():
            if item == "*":
                continue
            child = os.path.join(target, item)
            if os.path.isfile(child + ".py"):
                setattr(package, item, _exec_config_module(child + ".py", as_import=True))
            elif os.path.isdir(child):
                setattr(package, item, _config_dir_module(child, f"{package.__name__}.{item}"))
        return package
    raise ImportError(
        f"Config file {current_file!r}: {statement!r} refers to {target + '.py'!r}, which does not exist."
    )


def _make_import(current_file: str):
    def config_import(name, globals=None, locals=None, fromlist=(), level=0):
        package = (globals or {}).get("__package__") or ""
        if level > 0 and package.startswith(_CFG_PACKAGE_PREFIX):
            return _load_relative(current_file, name, level, fromlist)
        return builtins.__import__(name, globals, locals, fromlist, level)

    return config_import


def _exec_config_module(filename: str, as_import: bool = False) -> types.ModuleType:
    """Execute a ``.py`` config file in a fresh namespace and return it as a module.

    Relative imports inside the file load other config files (each execution is fresh, so two
    configs never share mutable objects). Only the file's own namespace sees the special import.
    With ``as_import``, the module's public dicts become ``DictConfig`` so the importing file can
    edit them by attribute (``model.backbone.depth = 101``).
    """
    with PathManager.open(filename, "r") as f:
        source = f.read()
    package = f"{_CFG_PACKAGE_PREFIX}.{uuid.uuid4().hex[:8]}"
    module_name = f"{package}.{os.path.splitext(os.path.basename(filename))[0]}"
    module = types.ModuleType(module_name)
    config_builtins = dict(builtins.__dict__)
    config_builtins["__import__"] = _make_import(filename)
    module.__dict__.update({"__file__": filename, "__package__": package, "__builtins__": config_builtins})
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)
    if as_import:
        for name, value in list(module.__dict__.items()):
            if not name.startswith("_") and isinstance(value, dict):
                module.__dict__[name] = DictConfig(value, flags={"allow_objects": True})
    return module


def _select_keys(cfg: abc.Mapping, keys: str | Sequence[str], filename: str) -> Any:
    def one(key: str) -> Any:
        if key not in cfg:
            raise ConfigKeyError(
                f"Config file {filename!r} defines no key {key!r}; it has: {', '.join(map(str, cfg.keys()))}."
            )
        value = cfg[key]
        if type(value) is dict:
            return DictConfig(value, flags={"allow_objects": True})
        if type(value) is list:
            return ListConfig(value, flags={"allow_objects": True})
        return value

    if isinstance(keys, str):
        return one(keys)
    return tuple(one(k) for k in keys)


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key in a config tree, without resolving interpolations."""
    out = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            full = f"{prefix}{key}"
            out.append(full)
            out.extend(_all_keys(node._get_node(key), full + "."))
    return out


def _yaml_problems(node: Any, path: str) -> list[str]:
    """Keys whose values YAML cannot represent faithfully (callables, tensors, enums, ...)."""
    if isinstance(node, abc.Mapping):
        problems = []
        for key, value in node.items():
            if not isinstance(key, (str, int)):
                problems.append(f"{path}[{key!r}] (key of type {type(key).__name__})")
                continue
            problems.extend(_yaml_problems(value, f"{path}.{key}" if path else str(key)))
        return problems
    if isinstance(node, (list, tuple)):
        return [p for i, v in enumerate(node) for p in _yaml_problems(v, f"{path}[{i}]")]
    if isinstance(node, enum.Enum) or not isinstance(node, _YAML_LEAF_TYPES):
        return [f"{path} ({_short_repr(node)})"]
    return []


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _targets_to_strings(node: Any) -> Any:
    """Replace callable ``_target_`` values by their import path wherever one exists."""
    if isinstance(node, abc.Mapping):
        out = {}
        for key, value in node.items():
            if key == _TARGET_KEY and not isinstance(value, str):
                path = target_to_string(value)
                out[key] = path if path is not None else value
            else:
                out[key] = _targets_to_strings(value)
        return out
    if isinstance(node, (list, tuple)):
        return [_targets_to_strings(v) for v in node]
    return node


class LazyConfig:
    """Load, save, override and print lazy configs (``.py`` or ``.yaml`` files)."""

    @staticmethod
    def load(filename: str, keys: str | Sequence[str] | None = None, *, allow_pickle: bool = False) -> Any:
        """Load a config file.

        Args:
            filename: a ``.py`` config (executed; may import other config files relatively), a ``.yaml``
                file (parsed with ``yaml.safe_load``), or, with ``allow_pickle=True``, a ``.pkl`` written by
                :meth:`save` for configs that YAML cannot hold.
            keys: a top-level key, or several, to return instead of the whole config.
            allow_pickle: unpickling runs code from the file; only allow it for files you trust.

        Returns:
            A ``DictConfig`` of the file's public top-level dicts and lists (or the requested keys).
        """
        filename = os.fspath(filename)
        ext = os.path.splitext(filename)[1]
        if not PathManager.exists(filename):
            raise FileNotFoundError(f"Config file {filename!r} does not exist.")
        if ext == ".py":
            namespace = vars(_exec_config_module(filename))
            if keys is not None:
                # As detectron2: a requested key may be any public name of the file, e.g. a plain value
                # (``lr = 0.02``) or one the file imported from another config.
                public = {
                    name: value
                    for name, value in namespace.items()
                    if not name.startswith("_") and not isinstance(value, types.ModuleType)
                }
                return _select_keys(public, keys, filename)
            # Only the file's config objects make up the config; plain values (numbers, strings, also those
            # imported from other config files with ``from .base import lr``) are the file's own business.
            content = {
                name: value
                for name, value in namespace.items()
                if not name.startswith("_") and isinstance(value, (DictConfig, ListConfig, dict, list))
            }
            cfg = DictConfig(content, flags={"allow_objects": True})
        elif ext in (".yaml", ".yml"):
            with PathManager.open(filename, "r") as f:
                try:
                    content = yaml.safe_load(f)
                except yaml.YAMLError as e:
                    raise ValueError(f"Config file {filename!r} is not valid YAML: {e}") from e
            if content is None:
                content = {}
            if not isinstance(content, dict):
                raise ValueError(f"Config file {filename!r} must hold a mapping at top level.")
            cfg = DictConfig(content, flags={"allow_objects": True})
        elif ext == ".pkl":
            if not allow_pickle:
                raise ValueError(
                    f"{filename!r} is a pickled config; unpickling runs code from the file. "
                    "Pass allow_pickle=True only if you trust it."
                )
            import pickle

            import cloudpickle  # noqa: F401  (needed to unpickle functions saved by value)

            with PathManager.open(filename, "rb") as f:
                cfg = pickle.load(f)
        else:
            raise ValueError(f"Unsupported config file {filename!r}: expected a .py or .yaml file.")
        if keys is not None:
            return _select_keys(cfg, keys, filename)
        return cfg

    @staticmethod
    def load_rel(filename: str, keys: str | Sequence[str] | None = None) -> Any:
        """Like :meth:`load`, with ``filename`` relative to the calling config file's directory."""
        caller = inspect.stack()[1]
        caller_file = caller.frame.f_globals.get("__file__", caller.filename)
        return LazyConfig.load(os.path.join(os.path.dirname(caller_file), filename), keys)

    @staticmethod
    def save(cfg: Any, filename: str) -> str:
        """Save a config as YAML that :meth:`load` reads back to an equal config.

        ``_target_`` callables are written as their import paths. A config that YAML cannot hold (a
        lambda, a tensor, a locally defined class, ...) is instead pickled with cloudpickle to
        ``filename + ".pkl"``, and a warning names the keys at fault. Files are written atomically.

        Returns:
            The path actually written.
        """
        filename = os.fspath(filename)
        container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
        container = _targets_to_strings(copy.deepcopy(container))
        problems = _yaml_problems(container, "")
        if not problems:
            text = OmegaConf.to_yaml(DictConfig(container, flags={"allow_objects": True}), resolve=False)
            if yaml.safe_load(text) == container:
                with atomic_write(filename, "w") as f:
                    f.write(text)
                return filename
            problems = ["<root> (the YAML text does not load back to an equal config)"]
        import cloudpickle

        pickled = filename + ".pkl"
        with atomic_write(pickled, "wb") as f:
            cloudpickle.dump(cfg if OmegaConf.is_config(cfg) else DictConfig(cfg, flags={"allow_objects": True}), f)
        logger.warning(
            "Config cannot be saved as YAML to %s: these keys hold values YAML cannot represent: %s. "
            "Saved it with cloudpickle to %s instead (load it with LazyConfig.load(path, "
            "allow_pickle=True)); use importable functions instead of lambdas to keep configs saveable.",
            filename,
            "; ".join(problems),
            pickled,
        )
        return pickled

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
        """Apply command-line overrides in hydra's syntax, in place, and return ``cfg``.

        Forms: ``a.b=1``, ``a.list=[1,2]``, ``a.s='text with spaces'``, ``a.x=null``; ``+a.new=1`` adds a
        key that must not exist yet; ``++a.k=1`` sets a key whether or not it exists; ``~a.k`` deletes one.
        Values are parsed with hydra's override grammar (never ``eval``).

        Raises:
            ConfigKeyError: (a ``KeyError``) overriding a key that does not exist (without ``+``), naming
                the closest keys.
            ValueError: an override that cannot be parsed, or a sweep (``a=1,2``).
        """
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        parser = OverridesParser.create()
        for text in overrides:
            try:
                (override,) = parser.parse_overrides([text])
            except HydraException as e:
                raise ValueError(f"Cannot parse override {text!r}: {e}") from e
            if override.is_sweep_override():
                raise ValueError(f"Override {text!r} is a sweep; an override sets a single value.")
            key = override.key_or_group
            if override.package:
                raise ValueError(f"Override {text!r}: '@package' syntax is not supported by lazy configs.")
            _check_parents_are_configs(cfg, key, text)
            exists = _key_exists(cfg, key)
            if override.is_delete():
                if not exists:
                    raise ConfigKeyError(_missing_key_message(cfg, key, text))
                parent_key, _, leaf = key.rpartition(".")
                parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
                del parent[leaf]
                continue
            value = override.value()
            if override.is_add() and exists:
                raise ConfigKeyError(f"Override {text!r} adds key {key!r}, which already exists; drop the '+'.")
            if not (exists or override.is_add() or override.is_force_add()):
                raise ConfigKeyError(_missing_key_message(cfg, key, text))
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        return cfg

    @staticmethod
    def to_py(cfg: Any, prefix: str = "cfg.") -> str:
        """Readable Python for a config: ``LazyCall`` nodes as ``L(Class)(arg=...)`` with imports.

        With ``prefix=""`` the text is itself a config file that loads back to an equal config.
        """
        return _PyWriter().write(cfg, prefix)


def _key_exists(cfg: DictConfig, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


def _check_parents_are_configs(cfg: DictConfig, key: str, text: str) -> None:
    """Refuse ``a.b.c=...`` when ``a.b`` exists but holds a value rather than a config node."""
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1], start=1):
        if part not in node.keys():
            return  # '++' creates the missing intermediate nodes
        node = node._get_node(part)
        if not isinstance(node, DictConfig):
            raise ConfigKeyError(
                f"Override {text!r}: {'.'.join(parts[:depth])!r} holds {_short_repr(node._value())}, "
                f"not a config node, so it cannot have the key {parts[depth]!r}."
            )


def _missing_key_message(cfg: DictConfig, key: str, text: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.5)
    hint = f" Closest existing keys: {', '.join(close)}." if close else ""
    return (
        f"Override {text!r}: the config has no key {key!r}.{hint} "
        "To add a new key, write '+' before it (e.g. +" + key + "=...)."
    )


class _PyWriter:
    """Formats a config as Python source (see ``LazyConfig.to_py``)."""

    def __init__(self) -> None:
        self.imports: dict[str, str] = {}  # import path -> local name

    def write(self, cfg: Any, prefix: str) -> str:
        container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
        lines = [f"{prefix}{key} = {self._value(value, 0)}" for key, value in container.items()]
        header = []
        if self.imports:
            header.append("from libdet.config import LazyCall as L")
            for path, local in sorted(self.imports.items()):
                module, name = path.rsplit(".", 1)
                header.append(f"from {module} import {name}" + (f" as {local}" if local != name else ""))
            header.append("")
        return "\n".join(header + lines) + "\n"

    def _name_for(self, target: Any) -> str:
        path = target if isinstance(target, str) else target_to_string(target)
        if path is None or "." not in path:
            return repr(target) if isinstance(target, str) else _short_repr(target)
        if isinstance(target, str):
            try:
                locate(path)
            except ImportError:
                return repr(path)  # L("some.path") still loads, even if not importable here
        if path in self.imports:
            return self.imports[path]
        name = path.rsplit(".", 1)[1]
        local, n = name, 1
        while local in self.imports.values() or local == "L":
            n += 1
            local = f"{name}_{n}"
        self.imports[path] = local
        return local

    def _value(self, value: Any, indent: int) -> str:
        pad, inner = " " * indent, " " * (indent + 4)
        if isinstance(value, dict):
            items = [(k, v) for k, v in value.items() if k != _TARGET_KEY]
            identifiers = all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k, _ in items)
            if _TARGET_KEY in value:
                head, close = f"L({self._name_for(value[_TARGET_KEY])})(", ")"
            elif identifiers:
                head, close = "dict(", ")"
            else:
                head, close = "{", "}"
            if not items:
                return head + close
            if identifiers:
                body = [f"{inner}{k}={self._value(v, indent + 4)}," for k, v in items]
            else:
                body = [f"{inner}{k!r}: {self._value(v, indent + 4)}," for k, v in items]
            return "\n".join([head, *body, pad + close])
        if isinstance(value, (list, tuple)):
            flat = repr(list(value))
            if all(isinstance(v, _YAML_LEAF_TYPES) for v in value) and len(flat) + indent <= 88:
                return flat
            body = [f"{inner}{self._value(v, indent + 4)}," for v in value]
            return "\n".join(["[", *body, pad + "]"])
        if callable(value):
            return self._name_for(value)
        return repr(value)
